/// transformers' `CLIPTextModel` / `CLIPTextModelWithProjection` on an NVIDIA GPU in 16-bit storage: the one model
/// definition (`CLIPTextModel.forward`) run by a `CUDABackend` holding its weights (Q/K/V stacked per layer, causal
/// attention read in place from the fused product by the `shortAttention` kernel; ≤ 1024 tokens). The embedding
/// tables stay on the host (77 rows are looked up and uploaded per call). Used for prompt encoding by the CUDA pipeline.
public final class CUDACLIPTextModel {
    public let model: CLIPTextModel
    public let backend: CUDABackend
    public var configuration: CLIPTextConfiguration { model.configuration }
    public var context: CUDAContext { backend.context }

    /// Uploads `model`'s weights (in the storage type) to `backend` and, unless `keepHostWeights` (to compare with the
    /// CPU), releases the host copies of its Linear weights.
    public init(_ model: CLIPTextModel, backend: CUDABackend, keepHostWeights: Bool = false) throws {
        try backend.prepare(model)
        if !keepHostWeights { for layer in model.linearLayers { layer.releaseHostWeight() } }
        self.model = model
        self.backend = backend
    }

    /// A backend of its own on `kernels`.
    public convenience init(_ model: CLIPTextModel, kernels: CUDAKernels, keepHostWeights: Bool = false) throws {
        try self.init(model, backend: CUDABackend(kernels: kernels), keepHostWeights: keepHostWeights)
    }

    /// Runs the encoder on equal-length token id rows (like `model(input_ids, output_hidden_states=True)`).
    public func callAsFunction(_ tokenIDs: [[Int]]) throws -> CLIPTextModel.Output<CUDATensor> {
        try model.forward(backend, tokenIDs: tokenIDs)
    }
}

extension CUDACLIPTextModel: TextEncoder {
    public func encode(_ tokenIDs: [[Int]]) throws -> TextEncoderOutput {
        let output = try self(tokenIDs)
        return TextEncoderOutput(lastHiddenState: try context.download(output.lastHiddenState),
                                 penultimateHiddenState: try context.download(output.penultimateHiddenState),
                                 pooled: try context.download(output.textEmbeds ?? output.pooledOutput))
    }
}

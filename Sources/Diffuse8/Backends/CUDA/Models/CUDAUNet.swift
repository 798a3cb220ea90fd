/// diffusers' `UNet2DConditionModel` on an NVIDIA GPU in 16-bit storage (FP16, or BF16 with the context's
/// `storageType`): the one model definition (`UNet2DConditionModel.forward`) run by a `CUDABackend` that holds
/// its weights (uploaded once, fused by `FusionPlan`). Activations stay on the device; `CUDAUNetGraph` replays
/// the forward as a CUDA graph. A quantized UNet runs its 8-bit layers as the CPU simulation defines them.
///
/// After preparation the model's FP32 host weights are released (`UNet2DConditionModel.releaseHostWeights`) unless
/// asked to keep them: the model then runs only on this backend. Limitations: one timestep for the whole batch per call; no level-4
/// FP8 attention yet. Not thread-safe (one `CUDAKernels`).
public final class CUDAUNet {
    public let model: UNet2DConditionModel
    public let backend: CUDABackend
    public var configuration: UNetConfiguration { model.configuration }
    public var kernels: CUDAKernels { backend.kernels }
    public var context: CUDAContext { backend.context }

    /// When set (non-nil), `forward` adds each operation's milliseconds here per kind (see `CUDABackend.profile`).
    public var profile: [String: Double]? {
        get { backend.profile }
        set { backend.profile = newValue }
    }

    /// Uploads `model`'s weights to `kernels`' device (a backend of its own unless `backend` is given) and, unless
    /// `keepHostWeights` (to compare with the CPU), releases the host copies.
    public init(_ model: UNet2DConditionModel, kernels: CUDAKernels? = nil, backend: CUDABackend? = nil,
                keepHostWeights: Bool = false) throws {
        let backend = try backend ?? CUDABackend(kernels: kernels ?? CUDAKernels())
        try backend.prepare(model)
        if !keepHostWeights { model.releaseHostWeights() }
        self.model = model
        self.backend = backend
    }

    /// Loads a diffusers `unet/` folder (plain or quantized) through the host model (FP32 while uploading).
    public static func load(directory: String, kernels: CUDAKernels? = nil) throws -> CUDAUNet {
        try CUDAUNet(QuantizedModelFolder.loadUNet(directory: directory), kernels: kernels)
    }

    /// The host-side inputs of one evaluation, uploaded: sinusoidal timestep features [B, block_out_channels[0]]
    /// and (SDXL) `add_time_proj` features of the time ids [B, k · addition_time_embed_dim].
    struct Conditioning {
        var timeFeatures: CUDATensor
        var timeIdFeatures: CUDATensor?
    }

    func conditioning(batch: Int, timestep: Float, timeIds: Tensor?) throws -> Conditioning {
        let features = try model.timeFeatures(timesteps: Array(repeating: timestep, count: batch), timeIds: timeIds)
        return Conditioning(timeFeatures: try kernels.upload(features.time), timeIdFeatures: try features.timeIds.map { try kernels.upload($0) })
    }

    /// One denoising evaluation, diffusers' `UNet2DConditionModel.forward(...).sample` in 16 bit.
    /// - Parameters:
    ///   - sample: [B, in_channels, H, W] latents on the device.
    ///   - timestep: the same timestep for every batch entry.
    ///   - encoderHiddenStates: [B, L, cross_attention_dim].
    ///   - textEmbeds: SDXL only, [B, pooled width] (text_encoder_2's projected pooled output).
    ///   - timeIds: SDXL only, [B, k] on the host (k = 6 for SDXL base).
    /// - Returns: [B, out_channels, H, W] on the device (queued; `download` waits).
    public func forward(sample: CUDATensor, timestep: Float, encoderHiddenStates: CUDATensor,
                        textEmbeds: CUDATensor? = nil, timeIds: Tensor? = nil) throws -> CUDATensor {
        let inputs = try conditioning(batch: sample.shape.first ?? 0, timestep: timestep, timeIds: timeIds)
        return try forward(sample: sample, conditioning: inputs, encoderHiddenStates: encoderHiddenStates, textEmbeds: textEmbeds)
    }

    /// The device part of `forward`: only kernel launches and device-to-device copies (capturable in a CUDA graph).
    func forward(sample: CUDATensor, conditioning inputs: Conditioning, encoderHiddenStates: CUDATensor,
                 textEmbeds: CUDATensor?) throws -> CUDATensor {
        try model.forward(backend, sample: sample, timeFeatures: inputs.timeFeatures, timeIdFeatures: inputs.timeIdFeatures,
                          encoderHiddenStates: encoderHiddenStates, textEmbeds: textEmbeds)
    }

    /// Frees, for every 3×3 convolution, the weight layout its measured fastest path does not use: −1.0 GB for
    /// SD1.5, −0.6 GB for SDXL. Call after one `forward` at the latent size you will use.
    @discardableResult
    public func releaseUnusedWeightLayouts() -> Int { backend.releaseUnusedWeightLayouts() }
}

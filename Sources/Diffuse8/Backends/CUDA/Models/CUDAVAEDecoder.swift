/// diffusers' `AutoencoderKL.decode` (`vae.decode(z).sample`) on an NVIDIA GPU in 16-bit storage: the one model
/// definition (`AutoencoderKL.decode`) run by a `CUDABackend` holding the VAE's weights (conv2 + shortcut biases
/// folded into the residual add, the mid-block attention's Q/K/V as one GEMM; its single head of dim = channels,
/// 512 for SD/SDXL, runs through `CUDAKernels.gemmAttention`).
///
/// Limitations: 16-bit storage only. diffusers upcasts the SDXL VAE to FP32 (`force_upcast: true` in its config)
/// because the original SDXL VAE's activations overflow FP16 (inf/NaN images); this class does not — run such
/// weights with BF16 storage (FP32's range), an FP16-safe VAE (e.g. madebyollin's `sdxl-vae-fp16-fix`) or the CPU.
/// No tiling or slicing: memory grows with the image (the mid-block attention's logits alone are 512 MiB per image
/// at 1024²). Not thread-safe (one `CUDAKernels`).
public final class CUDAVAEDecoder {
    public let vae: AutoencoderKL
    public let backend: CUDABackend
    public var configuration: VAEConfiguration { vae.configuration }
    public var context: CUDAContext { backend.context }

    /// Uploads `vae`'s weights in the storage type to `backend` and, unless `keepHostWeights` (to compare with the
    /// CPU), releases the host copies.
    public init(_ vae: AutoencoderKL, backend: CUDABackend, keepHostWeights: Bool = false) throws {
        try backend.prepare(vae)
        if !keepHostWeights {
            for layer in vae.linearLayers { layer.releaseHostWeight() }
            for layer in vae.convolutionLayers { layer.releaseHostWeight() }
        }
        self.vae = vae
        self.backend = backend
    }

    /// A backend of its own on `kernels`.
    public convenience init(_ vae: AutoencoderKL, kernels: CUDAKernels, keepHostWeights: Bool = false) throws {
        try self.init(vae, backend: CUDABackend(kernels: kernels), keepHostWeights: keepHostWeights)
    }

    public static func load(directory: String, kernels: CUDAKernels) throws -> CUDAVAEDecoder {
        try CUDAVAEDecoder(AutoencoderKL.load(directory: directory), kernels: kernels)
    }

    /// Image pixels per latent pixel along each side (8 for SD1.x / SDXL).
    public var downscaleFactor: Int { configuration.downscaleFactor }

    /// latents [N, latent_channels, h, w] on the device, ALREADY divided by `scaling_factor` (as for the CPU
    /// `AutoencoderKL.decode`) → image [N, out_channels, h·f, w·f] in roughly [-1, 1], not clamped: exactly
    /// `vae.decode(z).sample`. Queued on the stream (`download` waits).
    public func decode(_ latents: CUDATensor) throws -> CUDATensor { try vae.decode(backend, latents) }

    /// Like `CUDAUNet.releaseUnusedWeightLayouts`: after one `decode` at the size you will use, frees for every 3×3
    /// convolution the weight layout its chosen path does not use.
    @discardableResult
    public func releaseUnusedWeightLayouts() -> Int { backend.releaseUnusedWeightLayouts() }
}

/// `CUDAVAEDecoder` as the pipeline's `LatentDecoder`: uploads z (FP32 → FP16), decodes on the GPU, downloads
/// the image as FP32.
public final class CUDALatentDecoder: LatentDecoder {
    public let decoder: CUDAVAEDecoder
    public let configuration: VAEConfiguration
    let context: CUDAContext

    public init(_ vae: AutoencoderKL, kernels: CUDAKernels) throws {
        decoder = try CUDAVAEDecoder(vae, kernels: kernels)
        configuration = vae.configuration
        context = kernels.context
    }

    public func decodeLatents(_ z: Tensor) throws -> Tensor {
        try context.download(decoder.decode(context.upload(z)))
    }
}

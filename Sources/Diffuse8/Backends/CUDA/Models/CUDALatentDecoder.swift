/// `CUDAVAEDecoder` as the pipeline's `LatentDecoder`: uploads z (FP32 → 16-bit), decodes on the GPU, downloads
/// the image as FP32. After the first decode the convolution weight layouts it does not use are freed.
public final class CUDALatentDecoder: LatentDecoder {
    public let decoder: CUDAVAEDecoder
    public let configuration: VAEConfiguration
    let context: CUDAContext

    public init(_ vae: AutoencoderKL, backend: CUDABackend) throws {
        decoder = try CUDAVAEDecoder(vae, backend: backend)
        configuration = vae.configuration
        context = backend.context
    }

    private var releasedUnusedLayouts = false

    public func decodeLatents(_ z: Tensor) throws -> Tensor {
        let image = try context.download(decoder.decode(decoder.backend.kernels.upload(z)))
        if !releasedUnusedLayouts {
            // The first decode chose each convolution's path: drop the other weight copies.
            decoder.releaseUnusedWeightLayouts()
            releasedUnusedLayouts = true
        }
        return image
    }
}

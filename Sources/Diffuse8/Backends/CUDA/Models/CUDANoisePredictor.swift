/// `CUDAUNet` as the pipeline's `NoisePredictor`: per generation the conditioning is uploaded once, and each
/// step uploads the latents (FP32 → the 16-bit storage type), replays the UNet as a CUDA graph captured for that shape (kept for
/// later generations of the same shape) and downloads the prediction as FP32. Scheduler arithmetic and
/// guidance stay on the host in FP32 (the same code as the CPU pipeline); per SDXL step that costs two
/// ~256 KiB copies, well under a millisecond.
public final class CUDANoisePredictor: NoisePredictor {
    public let unet: CUDAUNet
    public var configuration: UNetConfiguration { unet.configuration }
    /// Replays captured graphs (default); false runs every kernel launch eagerly (for debugging). Set to false,
    /// with `graphError` saying why, when a capture fails (the UNet then runs eagerly: same results, a little slower).
    public var usesGraphs = true
    public private(set) var graphError: Error?
    private var graphs: [[Int]: CUDAUNetGraph] = [:]
    private var releasedUnusedLayouts = false

    public init(_ unet: CUDAUNet) { self.unet = unet }

    public func makeDenoiser(conditioning c: UNetConditioning, sampleShape: [Int]) throws -> (Tensor, Float) throws -> Tensor {
        let context = unet.context
        let states = try context.upload(c.encoderHiddenStates)
        let textEmbeds = try c.textEmbeds.map { try context.upload($0) }
        var graph: CUDAUNetGraph?
        if usesGraphs {
            guard sampleShape.count == 4 else { throw CUDAError.invalidArgument("CUDANoisePredictor: sample shape \(sampleShape) is not [B, C, H, W]") }
            let key = sampleShape + [states.shape[1], textEmbeds?.shape[1] ?? 0]
            if let known = graphs[key] {
                graph = known
            } else {
                do {
                    let made = try CUDAUNetGraph(unet, batch: sampleShape[0], height: sampleShape[2], width: sampleShape[3],
                                                 contextLength: states.shape[1], textEmbedsWidth: textEmbeds?.shape[1],
                                                 timeIdCount: c.timeIds?.shape.last ?? 6)
                    graphs[key] = made
                    graph = made
                } catch {
                    graphError = error
                    usesGraphs = false
                }
                if !releasedUnusedLayouts {
                    // The warm-up inside the capture chose each convolution's path: drop the other weight copies.
                    unet.releaseUnusedWeightLayouts()
                    releasedUnusedLayouts = true
                }
            }
        }
        let unet = self.unet
        return { sample, timestep in
            let x = try context.upload(sample)
            let y = try graph?.forward(sample: x, timestep: timestep, encoderHiddenStates: states, textEmbeds: textEmbeds, timeIds: c.timeIds)
                ?? unet.forward(sample: x, timestep: timestep, encoderHiddenStates: states, textEmbeds: textEmbeds, timeIds: c.timeIds)
            return try context.download(y)
        }
    }
}

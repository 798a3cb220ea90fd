/// `CUDAUNet` as the pipeline's `NoisePredictor`. Sampling loops whose scheduler states its steps as coefficients
/// (Euler, Euler a, DDIM, DPM++ 2M) run entirely on the GPU (`CUDASamplingLoop`: one UNet graph
/// replay and one fused guidance + update kernel per step, queued without the host).
/// Otherwise (image-to-image, calibration, evaluation that observes each step), per generation the conditioning is uploaded once, and each step uploads the latents
/// (FP32 → the 16-bit storage type), replays the UNet as a CUDA graph captured for that shape (kept for later
/// generations of the same shape) and downloads the prediction as FP32. Scheduler arithmetic and
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
        let unet = self.unet, context = unet.context
        let states = try unet.kernels.upload(c.encoderHiddenStates)
        let textEmbeds = try c.textEmbeds.map { try unet.kernels.upload($0) }
        let graph = try self.graph(sampleShape: sampleShape, states: states, textEmbeds: textEmbeds, timeIds: c.timeIds)
        return { sample, timestep in
            let x = try unet.kernels.upload(sample)
            let y = try graph?.forward(sample: x, timestep: timestep, encoderHiddenStates: states, textEmbeds: textEmbeds, timeIds: c.timeIds)
                ?? unet.forward(sample: x, timestep: timestep, encoderHiddenStates: states, textEmbeds: textEmbeds, timeIds: c.timeIds)
            return try context.download(y)
        }
    }

    /// Set to false to step every sampler on the host (for comparisons).
    public var runsSamplingLoopOnDevice = true

    /// The whole sampling loop on the GPU (`CUDASamplingLoop`): no host round trip per step. Nil (host loop) when
    /// graphs are off or cannot be captured.
    public func runSamplingLoop(_ plan: SamplingPlan, conditioning c: UNetConditioning, progress: ((Int) -> Void)?) throws -> Tensor? {
        guard runsSamplingLoopOnDevice, usesGraphs else { return nil }
        let states = try unet.kernels.upload(c.encoderHiddenStates)
        let textEmbeds = try c.textEmbeds.map { try unet.kernels.upload($0) }
        var sampleShape = plan.latents.shape
        sampleShape[0] = c.guided ? 2 : 1
        guard let graph = try self.graph(sampleShape: sampleShape, states: states, textEmbeds: textEmbeds, timeIds: c.timeIds) else {
            return nil
        }
        try graph.setConstantInputs(encoderHiddenStates: states, textEmbeds: textEmbeds, timeIds: c.timeIds)
        return try CUDASamplingLoop.run(plan, graph: graph, kernels: unet.kernels, guided: c.guided, progress: progress)
    }

    /// The graph captured for these input shapes (created on first use), or nil when graphs are off or capture failed.
    private func graph(sampleShape: [Int], states: CUDATensor, textEmbeds: CUDATensor?, timeIds: Tensor?) throws -> CUDAUNetGraph? {
        guard usesGraphs else { return nil }
        guard sampleShape.count == 4 else { throw CUDAError.invalidArgument("CUDANoisePredictor: sample shape \(sampleShape) is not [B, C, H, W]") }
        let key = sampleShape + [states.shape[1], textEmbeds?.shape[1] ?? 0]
        if let known = graphs[key] { return known }
        defer {
            if !releasedUnusedLayouts {
                // The warm-up inside the capture chose each convolution's path: drop the other weight copies.
                unet.releaseUnusedWeightLayouts()
                releasedUnusedLayouts = true
            }
        }
        do {
            let made = try CUDAUNetGraph(unet, batch: sampleShape[0], height: sampleShape[2], width: sampleShape[3],
                                         contextLength: states.shape[1], textEmbedsWidth: textEmbeds?.shape[1],
                                         timeIdCount: timeIds?.shape.last ?? 6)
            graphs[key] = made
            return made
        } catch {
            graphError = error
            usesGraphs = false
            return nil
        }
    }
}

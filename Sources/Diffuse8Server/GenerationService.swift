import Diffuse8
import Diffuse8PNG
import Foundation

/// Loads a pipeline for a model folder (the real one in the server; tests may count loads).
public typealias PipelineLoader = @Sendable (_ path: String) throws -> StableDiffusionPipeline

/// The engine behind the HTTP routes: the loaded model, the job queue (one generation at a time on the device),
/// progress and interrupt. Everything that touches the pipeline runs as a queue job on the worker thread.
public final class GenerationService: @unchecked Sendable {
    public let catalog: ModelCatalog
    public let limits: ServerLimits
    public let metrics: ServerMetrics
    public let tracker: ProgressTracker
    public let queue: JobQueue
    private let loader: PipelineLoader
    private let lock = NSLock()
    /// Touched on the worker thread only (inside queue jobs), except `current`, which the lock guards.
    private var pipeline: StableDiffusionPipeline
    private var current: ModelCatalog.Entry
    private var nativeSizeValue: Int
    private let depth = DepthCounter()
    /// The latent → RGB preview map of the loaded model (refitted after each image).
    private var previewMapValue = LatentPreview.sd1ApproxCheap
    /// The fit behind `previewMapValue` (worker thread only).
    private var previewFit: LatentPreview.Fit?

    /// Loads `initial` (before the server listens, so `/internal/ping` answering means ready).
    public init(catalog: ModelCatalog, initial: ModelCatalog.Entry, limits: ServerLimits, metrics: ServerMetrics,
                tracker: ProgressTracker = ProgressTracker(), loader: @escaping PipelineLoader) throws {
        self.tracker = tracker
        self.catalog = catalog
        self.limits = limits
        self.metrics = metrics
        self.loader = loader
        self.pipeline = try loader(initial.path)
        self.current = initial
        self.nativeSizeValue = pipeline.nativeSize
        let (gauge, depth) = (metrics.queueDepth, depth)
        self.queue = JobQueue(capacity: limits.maxQueuedJobs) {
            gauge.set(Double($0))
            depth.value = $0
        }
    }

    /// The loaded model's catalog entry.
    public var currentModel: ModelCatalog.Entry { lock.withLock { current } }
    /// The loaded model's native image size (the default width and height).
    public var nativeSize: Int { lock.withLock { nativeSizeValue } }

    /// The loaded model's latent → RGB preview map.
    public var previewMap: LatentPreview.LinearMap { lock.withLock { previewMapValue } }

    /// Jobs waiting behind the running one, as last reported by the queue.
    public var queueDepthEstimate: Int { depth.value }

    /// Switches to the catalog model `title` (a queue job: it waits for running generations).
    public func switchModel(title: String) async throws {
        guard let entry = catalog.entry(title: title) else {
            throw ValidationFailure([ValidationIssue(
                field: "sd_model_checkpoint",
                "model '\(title)' not found; available: \(catalog.entries.map(\.name).joined(separator: ", "))",
                type: "value_error")])
        }
        guard entry != currentModel else { return }
        try await queue.run { [self] in
            tracker.begin(job: "load \(entry.name)", images: 0, steps: 0, cancellation: GenerationCancellation())
            defer { tracker.end() }
            let loaded = try loader(entry.path)
            pipeline = loaded
            previewFit = nil
            lock.withLock {
                current = entry
                nativeSizeValue = loaded.nativeSize
                previewMapValue = LatentPreview.sd1ApproxCheap
            }
        }
    }

    /// Runs a validated txt2img request: waits in the queue, generates `batch_size × n_iter` images with seeds
    /// seed, seed+1, … (seed -1: random), and returns A1111's response.
    public func txt2img(_ parameters: Txt2ImgParameters) async throws -> Txt2ImgResponse {
        let result = try await queue.run { [self] in try generate(parameters) }
        return result
    }

    /// The queue job: every image of one request, on the worker thread.
    private func generate(_ p: Txt2ImgParameters) throws -> Txt2ImgResponse {
        let baseSeed = p.seed >= 0 ? UInt64(p.seed) : UInt64.random(in: 0..<4_294_967_294)  // A1111's random range
        let seeds = (0..<p.imageCount).map { baseSeed + UInt64($0) }
        let cancellation = GenerationCancellation()
        let runSteps = p.initImage == nil ? p.steps : min(Int(Float(p.steps) * Float(p.denoisingStrength)), p.steps)
        tracker.begin(job: p.initImage == nil ? "txt2img" : "img2img", images: p.imageCount, steps: runSteps, cancellation: cancellation)
        defer { tracker.end() }
        let model = currentModel.name
        let previewLatents = pipeline.device == .cpu  // the CUDA Euler loop runs on the device without per-step latents
        var images: [String] = [], infotexts: [String] = []
        var interrupted = false
        let clock = ContinuousClock()
        for (index, seed) in seeds.enumerated() {
            tracker.beginImage(index)
            var request = GenerationRequest(prompt: p.prompt, negativePrompt: p.negativePrompt, steps: p.steps,
                                            guidanceScale: Float(p.cfgScale), seed: seed, width: p.width, height: p.height,
                                            scheduler: p.kind)
            request.cancellation = cancellation
            request.clipSkip = p.clipSkip
            if let initImage = p.initImage {
                request.initImage = ImageConversion.initImageTensor(initImage)
                request.strength = Float(p.denoisingStrength)
            }
            let imageStart = clock.now
            var stepStart = clock.now
            let image: PixelImage
            do {
                var warnings: [String] = []
                let conditioning = try pipeline.encodeConditioning(request, warnings: &warnings)
                let latents = try pipeline.denoise(request, conditioning: conditioning, progress: { [tracker, metrics] step in
                    let now = clock.now
                    metrics.stepSeconds.record(ProgressTracker.seconds(now - stepStart))
                    metrics.stepsDone.increment()
                    stepStart = now
                    tracker.step(step.step, of: step.totalSteps)
                }, observe: previewLatents ? { [tracker] _, _, input, _ in tracker.setLatents(input) } : nil)
                let scaling = pipeline.decoder.configuration.scalingFactor
                let decoded = try pipeline.decoder.decodeLatents(CPUKernels.map(latents) { $0 / scaling })
                image = ImageConversion.pixelImages(fromDecoded: decoded)[0]
                if previewLatents {
                    var fit = previewFit ?? LatentPreview.Fit(channels: latents.shape[1])
                    if fit.add(latents: latents, image: decoded), let map = fit.solve() {
                        previewFit = fit
                        lock.withLock { previewMapValue = map }
                    }
                }
            } catch is GenerationCancelled {
                interrupted = true
                metrics.countError(.interrupted)
                break
            }
            let infotext = A1111Parameters(request: request, width: image.width, height: image.height, model: model).text
            if p.sendImages {
                images.append(Data(try PNGEncoder.encode(image, text: [("parameters", infotext)])).base64EncodedString())
            }
            infotexts.append(infotext)
            metrics.imagesGenerated.increment()
            metrics.generationSeconds.record(ProgressTracker.seconds(clock.now - imageStart))
        }
        let signedSeeds = seeds.map { Int64($0) }
        let info = GenerationInfo(
            prompt: p.prompt, all_prompts: Array(repeating: p.prompt, count: infotexts.count),
            negative_prompt: p.negativePrompt, all_negative_prompts: Array(repeating: p.negativePrompt, count: infotexts.count),
            seed: signedSeeds[0], all_seeds: Array(signedSeeds.prefix(infotexts.count)),
            subseed: signedSeeds[0], all_subseeds: Array(signedSeeds.prefix(infotexts.count)),
            width: p.width, height: p.height, sampler_name: p.kind.samplerName, cfg_scale: p.cfgScale, steps: p.steps,
            batch_size: p.batchSize, sd_model_name: model, infotexts: infotexts,
            job_timestamp: tracker.snapshot.jobTimestamp, interrupted: interrupted)
        let infoJSON = String(decoding: try JSONEncoder().encode(info), as: UTF8.self)
        return Txt2ImgResponse(images: images, parameters: Txt2ImgEcho(p), info: infoJSON)
    }
}

/// An integer behind a lock, written by the queue and read by request handlers.
final class DepthCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var stored = 0
    var value: Int {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}

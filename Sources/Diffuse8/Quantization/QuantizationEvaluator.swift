#if canImport(Glibc)
import Glibc
#endif

/// Paired quality evaluation of quantized models against the full-precision model (DESIGN §5): for every
/// prompt and seed, the image of each model vs the FP image (PSNR on RGB, SSIM on luma; see
/// `ImageMetrics`) and the per-step noise-prediction SQNR, where each quantized UNet sees exactly the FP
/// trajectory's input at every step (teacher forcing, so errors do not compound).
public struct QuantizationEvaluator {
    public struct Sample: Sendable {
        public var prompt: String
        public var seed: UInt64
        /// Per model (index into `models`): PSNR, SSIM of its image vs FP.
        public var psnr: [Double]
        public var ssim: [Double]
        /// Per model, per step: SQNR (dB) of its noise prediction vs FP on the FP trajectory.
        public var stepSQNR: [[Double]]
        /// FP image first, then one per model.
        public var images: [PixelImage]
        /// Prompt fidelity (`PromptFidelity`, 0…100 points) of each image, FP first; nil when the prompt is
        /// outside the default model's caption templates.
        public var fidelity: [Double?]
    }

    /// Summary of one quantized model over all samples.
    public struct Summary: Sendable, Codable {
        public var model: String
        public var meanPSNR: Double
        /// 10th percentile (the worst 10 %) of PSNR over samples.
        public var p10PSNR: Double
        public var meanSSIM: Double
        public var p10SSIM: Double
        /// Mean over the samples where it was measured of the per-step SQNR, per step.
        public var meanStepSQNR: [Double]
        public var meanSQNR: Double
        public var seconds: Double
        /// Mean prompt fidelity (points) of this model's images and of the FP images of the same samples
        /// (nil when no prompt could be scored).
        public var meanFidelity: Double?
        public var referenceFidelity: Double?
    }

    public let reference: StableDiffusionPipeline
    public let models: [StableDiffusionPipeline]

    public init(reference: StableDiffusionPipeline, models: [StableDiffusionPipeline]) {
        self.reference = reference
        self.models = models
    }

    /// One prompt/seed: generates FP and quantized images and the per-step SQNR.
    /// `seconds[i]` accumulates model i's generation time.
    /// `measureSQNR: false` skips the teacher-forced pass (it costs as much as generating the images again).
    public func evaluate(_ request: GenerationRequest, seconds: inout [Double], measureSQNR: Bool = true) throws -> Sample {
        let fp = try reference.generate(request)
        let fpImage = ImageConversion.pixelImages(fromDecoded: fp.image)[0]
        var images = [fpImage], psnr: [Double] = [], ssim: [Double] = []
        for (i, model) in models.enumerated() {
            let start = Self.now()
            let image = ImageConversion.pixelImages(fromDecoded: try model.generate(request).image)[0]
            seconds[i] += Self.now() - start
            images.append(image)
            psnr.append(ImageMetrics.psnr(fpImage, image))
            ssim.append(ImageMetrics.ssim(fpImage, image))
        }
        let fidelity = images.map { Self.fidelity(of: $0, prompt: request.prompt) }
        return Sample(prompt: request.prompt, seed: request.seed, psnr: psnr, ssim: ssim,
                      stepSQNR: measureSQNR ? try stepSQNR(request) : Array(repeating: [], count: models.count),
                      images: images, fidelity: fidelity)
    }

    /// Prompt fidelity (points of 100) of one image, nil when the prompt is outside the caption templates.
    public static func fidelity(of image: PixelImage, prompt: String) -> Double? {
        let rgb = image.channels == 3 ? image.pixels : Self.rgb(image)
        return (try? PromptFidelity.evaluate(caption: prompt, image: rgb, width: image.width, height: image.height)).map { $0.score * 100 }
    }

    /// Per model, per step: SQNR of the model's UNet output vs the FP UNet output on the FP trajectory
    /// (teacher forcing: every UNet sees the FP pipeline's inputs).
    public func stepSQNR(_ request: GenerationRequest) throws -> [[Double]] {
        try reference.validate(request)
        var warnings: [String] = []
        let c = try reference.encodeConditioning(request, warnings: &warnings)
        var result = Array(repeating: [Double](), count: models.count)
        let unets = try models.map { try $0.cpuUNet() }
        _ = try reference.denoise(request, conditioning: c, observe: { _, timestep, input, output in
            for (i, unet) in unets.enumerated() {
                let q = unet(sample: input, timestep: timestep, encoderHiddenStates: c.encoderHiddenStates,
                                   textEmbeds: c.textEmbeds, timeIds: c.timeIds)
                result[i].append(ImageMetrics.sqnr(reference: output, q))
            }
        })
        return result
    }

    /// Summaries per model (`names[i]` labels model i).
    public static func summarize(_ samples: [Sample], names: [String], seconds: [Double]) -> [Summary] {
        names.indices.map { i in
            let psnr = samples.map { min($0.psnr[i], ImageMetrics.psnrCap) }
            let ssim = samples.map { $0.ssim[i] }
            let measured = samples.filter { !$0.stepSQNR[i].isEmpty }
            let steps = measured.first?.stepSQNR[i].count ?? 0
            let capped = measured.map { $0.stepSQNR[i].map { min($0, ImageMetrics.psnrCap) } }
            let perStep = (0..<steps).map { t in capped.map { $0[t] }.reduce(0, +) / Double(max(1, capped.count)) }
            let scored = samples.filter { $0.fidelity[0] != nil && $0.fidelity[i + 1] != nil }
            return Summary(model: names[i], meanPSNR: mean(psnr), p10PSNR: ImageMetrics.quantile(psnr, 0.1),
                           meanSSIM: mean(ssim), p10SSIM: ImageMetrics.quantile(ssim, 0.1),
                           meanStepSQNR: perStep, meanSQNR: mean(perStep), seconds: seconds[i],
                           meanFidelity: scored.isEmpty ? nil : mean(scored.map { $0.fidelity[i + 1]! }),
                           referenceFidelity: scored.isEmpty ? nil : mean(scored.map { $0.fidelity[0]! }))
        }
    }

    static func mean(_ v: [Double]) -> Double { v.isEmpty ? .nan : v.reduce(0, +) / Double(v.count) }

    /// A grid image: one row per sample, columns FP | model 1 | model 2 …, 2-pixel white gutters.
    public static func grid(_ samples: [Sample]) -> PixelImage? {
        guard let first = samples.first?.images.first else { return nil }
        let w = first.width, h = first.height, gutter = 2
        let columns = samples[0].images.count, rows = samples.count
        let gw = columns * w + (columns - 1) * gutter, gh = rows * h + (rows - 1) * gutter
        var pixels = [UInt8](repeating: 255, count: gw * gh * 3)
        for (r, sample) in samples.enumerated() {
            for (c, image) in sample.images.enumerated() {
                for y in 0..<h {
                    for x in 0..<w {
                        let src = (y * w + x) * image.channels
                        let dst = ((r * (h + gutter) + y) * gw + c * (w + gutter) + x) * 3
                        for k in 0..<3 { pixels[dst + k] = image.pixels[src + min(k, image.channels - 1)] }
                    }
                }
            }
        }
        return PixelImage(width: gw, height: gh, channels: 3, pixels: pixels)
    }

    /// RGB bytes of a grey or RGBA image.
    static func rgb(_ image: PixelImage) -> [UInt8] {
        (0..<(image.width * image.height)).flatMap { i -> [UInt8] in
            let p = i * image.channels
            return image.channels == 1 ? [image.pixels[p], image.pixels[p], image.pixels[p]] : Array(image.pixels[p..<(p + 3)])
        }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

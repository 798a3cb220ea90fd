#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// How `FidelityEvaluation.run` generates its images.
public struct FidelityEvaluationOptions: Codable, Sendable, Equatable {
    /// Denoising steps per image.
    public var steps: Int
    /// Classifier-free guidance scale.
    public var guidanceScale: Float
    /// Seeds 0..<seeds for every prompt.
    public var seeds: Int
    /// Sampler (`SchedulerKind.rawValue`).
    public var scheduler: String

    public init(steps: Int = 30, guidanceScale: Float = 5, seeds: Int = 1, scheduler: SchedulerKind = .euler) {
        self.steps = steps
        self.guidanceScale = guidanceScale
        self.seeds = seeds
        self.scheduler = scheduler.rawValue
    }
}

/// One generated image and how well it follows its prompt.
public struct FidelitySample: Codable, Sendable {
    public struct Check: Codable, Sendable, Equatable {
        public var kind: String
        public var name: String
        public var expected: String
        public var observed: String
        public var correct: Bool
    }

    public var prompt: String
    public var seed: UInt64
    /// `FidelityReport.score`: fraction of the prompt's attributes read back, in [0, 1].
    public var score: Double
    public var checks: [Check]
    /// Wall-clock seconds to generate (not score) the image.
    public var seconds: Double

    public init(prompt: String, seed: UInt64, report: FidelityReport, seconds: Double) {
        self.prompt = prompt
        self.seed = seed
        self.score = report.score
        self.checks = report.checks.map { Check(kind: $0.kind, name: $0.name, expected: $0.expected, observed: $0.observed, correct: $0.correct) }
        self.seconds = seconds
    }
}

/// Accuracy over a set of attribute checks.
public struct AttributeAccuracy: Codable, Sendable, Equatable {
    public var correct: Int
    public var total: Int
    public var accuracy: Double { total == 0 ? 0 : Double(correct) / Double(total) }

    public init(correct: Int = 0, total: Int = 0) {
        self.correct = correct
        self.total = total
    }

    enum CodingKeys: String, CodingKey { case correct, total, accuracy }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        correct = try c.decode(Int.self, forKey: .correct)
        total = try c.decode(Int.self, forKey: .total)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(correct, forKey: .correct)
        try c.encode(total, forKey: .total)
        try c.encode(accuracy, forKey: .accuracy)
    }
}

/// The outcome of a prompt-fidelity evaluation (what `diffuse8 evaluate-fidelity` prints and writes as JSON).
public struct FidelityEvaluationResult: Codable, Sendable {
    public var model: String
    public var options: FidelityEvaluationOptions
    public var samples: [FidelitySample]

    public init(model: String, options: FidelityEvaluationOptions, samples: [FidelitySample]) {
        self.model = model
        self.options = options
        self.samples = samples
    }

    /// All attribute checks of all images together.
    public var overall: AttributeAccuracy {
        samples.reduce(into: AttributeAccuracy()) { sum, sample in
            sum.total += sample.checks.count
            sum.correct += sample.checks.filter(\.correct).count
        }
    }

    /// Accuracy per attribute kind (`AttributeCheck.kind`), in `FidelityEvaluation.kindOrder`.
    public var byKind: [(kind: String, accuracy: AttributeAccuracy)] {
        var table: [String: AttributeAccuracy] = [:]
        for check in samples.flatMap(\.checks) {
            table[check.kind, default: AttributeAccuracy()].total += 1
            if check.correct { table[check.kind]!.correct += 1 }
        }
        let known = FidelityEvaluation.kindOrder.filter { table[$0] != nil }
        let other = table.keys.filter { !FidelityEvaluation.kindOrder.contains($0) }.sorted()
        return (known + other).map { ($0, table[$0]!) }
    }

    /// Mean of the per-image scores (each image weighs the same, whatever its number of attributes).
    public var meanScore: Double {
        samples.isEmpty ? 0 : samples.map(\.score).reduce(0, +) / Double(samples.count)
    }

    /// Fraction of images with every attribute right.
    public var perfectImages: Double {
        samples.isEmpty ? 0 : Double(samples.filter { $0.score == 1 }.count) / Double(samples.count)
    }

    /// A few lines for people: overall accuracy, one line per kind, mean image score.
    public var summary: String {
        func percent(_ x: Double) -> String { FidelityEvaluation.fixed(100 * x, digits: 1) + "%" }
        func padded(_ s: String) -> String { s + String(repeating: " ", count: max(0, 11 - s.count)) }
        var lines = ["images: \(samples.count) (model \(model), \(options.scheduler), \(options.steps) steps, CFG \(options.guidanceScale), seeds 0..<\(options.seeds))",
                     "overall attribute accuracy: \(percent(overall.accuracy)) (\(overall.correct)/\(overall.total))"]
        for (kind, accuracy) in byKind {
            lines.append("  \(padded(kind)) \(percent(accuracy.accuracy)) (\(accuracy.correct)/\(accuracy.total))")
        }
        lines.append("mean image score: \(FidelityEvaluation.fixed(meanScore, digits: 3)); images with every attribute right: \(percent(perfectImages))")
        return lines.joined(separator: "\n")
    }

    enum CodingKeys: String, CodingKey { case model, options, overall, byKind, meanScore, perfectImages, samples }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decode(String.self, forKey: .model)
        options = try c.decode(FidelityEvaluationOptions.self, forKey: .options)
        samples = try c.decode([FidelitySample].self, forKey: .samples)
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(model, forKey: .model)
        try c.encode(options, forKey: .options)
        try c.encode(overall, forKey: .overall)
        try c.encode(Dictionary(uniqueKeysWithValues: byKind.map { ($0.kind, $0.accuracy) }), forKey: .byKind)
        try c.encode(meanScore, forKey: .meanScore)
        try c.encode(perfectImages, forKey: .perfectImages)
        try c.encode(samples, forKey: .samples)
    }

    /// Pretty-printed JSON with sorted keys (stable diffs between runs).
    public func jsonBytes() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return Array(try encoder.encode(self)) + [0x0A]
    }

    /// Writes `jsonBytes()` to `path` atomically.
    public func writeJSON(to path: String) throws {
        try AtomicFileWriter.write(try jsonBytes(), to: path)
    }
}

/// Progress of `FidelityEvaluation.run`, reported after each image.
public struct FidelityProgress: Sendable {
    /// Images done (1-based count) and in all.
    public var completed: Int
    public var total: Int
    public var prompt: String
    public var seed: UInt64
    /// Seconds since the evaluation started.
    public var elapsed: Double
    /// The running overall attribute accuracy.
    public var accuracySoFar: Double
    /// Estimated seconds left, from the mean time per image so far.
    public var remaining: Double { completed == 0 ? 0 : elapsed / Double(completed) * Double(total - completed) }
}

/// A prompts file could not be used.
public struct FidelityEvaluationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Prompt fidelity of a text-to-image model on the shapes data set's captions: generate every prompt with
/// seeds 0..<N, read each image back with `PromptFidelity`, and count the attributes right.
///
/// The generator is a closure, so the same loop scores the full-precision pipeline and quantized variants.
/// Limitations: prompts must follow `training/dataset.py`'s templates (`CaptionParser`); images are scored
/// as RGB (grey is expanded, alpha dropped).
public enum FidelityEvaluation {
    /// The order kinds are reported in (the order `PromptFidelity` checks them).
    public static let kindOrder = ["background", "count", "colour", "shape", "size", "position", "relation", "order"]

    /// Reads a prompts file: one prompt a line; blank lines and lines starting with `#` are skipped. Every prompt
    /// is parsed up front, so a bad line fails before any image is generated.
    public static func readPrompts(path: String) throws -> [String] {
        guard let data = InputFile.contents(atPath: path) else {
            throw FidelityEvaluationError("cannot read prompts file \(path); pass an existing file, e.g. training/heldout_prompts.txt")
        }
        var prompts: [String] = []
        for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let prompt = String(line.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
            if prompt.isEmpty || prompt.hasPrefix("#") { continue }
            do {
                _ = try CaptionParser.parse(prompt)
            } catch {
                throw FidelityEvaluationError("\(path):\(number + 1): \(error)")
            }
            prompts.append(prompt)
        }
        guard !prompts.isEmpty else { throw FidelityEvaluationError("prompts file \(path) holds no prompts") }
        return prompts
    }

    /// Generates and scores every (prompt, seed) pair, prompt-major (all seeds of prompt 1, then prompt 2, …).
    /// - Parameters:
    ///   - generate: makes one image for a request (RGB or grey `PixelImage`).
    ///   - keepImages: how many of the first images to return (e.g. 16 for a grid); the others are dropped.
    ///   - progress: called after every image.
    public static func run(
        model: String, prompts: [String], options: FidelityEvaluationOptions, keepImages: Int = 0,
        generate: (GenerationRequest) throws -> PixelImage, progress: ((FidelityProgress) -> Void)? = nil
    ) throws -> (result: FidelityEvaluationResult, images: [PixelImage]) {
        guard let scheduler = SchedulerKind(rawValue: options.scheduler) else {
            throw FidelityEvaluationError("unknown scheduler '\(options.scheduler)'")
        }
        guard options.seeds >= 1 else { throw FidelityEvaluationError("seeds must be at least 1, got \(options.seeds)") }
        let total = prompts.count * options.seeds
        let start = monotonicSeconds()
        var samples: [FidelitySample] = []
        var images: [PixelImage] = []
        var correct = 0, checked = 0
        for prompt in prompts {
            for seed in 0..<UInt64(options.seeds) {
                let request = GenerationRequest(prompt: prompt, steps: options.steps, guidanceScale: options.guidanceScale,
                                                seed: seed, scheduler: scheduler)
                let before = monotonicSeconds()
                let image = try generate(request)
                let seconds = monotonicSeconds() - before
                let report = try PromptFidelity.evaluate(caption: prompt, image: rgbBytes(image), width: image.width, height: image.height)
                samples.append(FidelitySample(prompt: prompt, seed: seed, report: report, seconds: seconds))
                if images.count < keepImages { images.append(image) }
                correct += report.correctCount
                checked += report.checks.count
                progress?(FidelityProgress(completed: samples.count, total: total, prompt: prompt, seed: seed,
                                           elapsed: monotonicSeconds() - start,
                                           accuracySoFar: checked == 0 ? 0 : Double(correct) / Double(checked)))
            }
        }
        return (FidelityEvaluationResult(model: model, options: options, samples: samples), images)
    }

    /// Convenience: generate with a loaded pipeline (final VAE output converted as diffusers does).
    public static func run(
        pipeline: StableDiffusionPipeline, model: String, prompts: [String], options: FidelityEvaluationOptions,
        keepImages: Int = 0, progress: ((FidelityProgress) -> Void)? = nil
    ) throws -> (result: FidelityEvaluationResult, images: [PixelImage]) {
        try run(model: model, prompts: prompts, options: options, keepImages: keepImages, generate: { request in
            let result = try pipeline.generate(request)
            return ImageConversion.pixelImages(fromDecoded: result.image)[0]
        }, progress: progress)
    }

    /// Interleaved RGB bytes of `image`: grey is repeated, alpha dropped.
    public static func rgbBytes(_ image: PixelImage) -> [UInt8] {
        switch image.channels {
        case 3: return image.pixels
        case 1: return image.pixels.flatMap { [$0, $0, $0] }
        default:
            var rgb = [UInt8](); rgb.reserveCapacity(image.width * image.height * 3)
            for p in 0..<(image.width * image.height) { rgb += image.pixels[(4 * p)..<(4 * p + 3)] }
            return rgb
        }
    }

    /// `x` with `digits` decimals ("81.3"), without Foundation's `String(format:)`.
    public static func fixed(_ x: Double, digits: Int) -> String {
        guard x.isFinite else { return String(x) }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = Int((abs(x) * scale).rounded())
        let whole = scaled / Int(scale), fraction = scaled % Int(scale)
        var text = String(whole)
        if digits > 0 {
            let f = String(fraction)
            text += "." + String(repeating: "0", count: digits - f.count) + f
        }
        return (x < 0 && scaled != 0 ? "-" : "") + text
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

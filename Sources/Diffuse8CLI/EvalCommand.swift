import ArgumentParser
import Diffuse8
import Diffuse8PNG
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Compare quantized models with the full-precision model: PSNR, SSIM, per-step SQNR, prompt fidelity; Markdown + JSON report and an image grid.",
        discussion: """
        Two modes. With --quantized, the models are run here (FP and each quantized model, same prompts and seeds).
        With --reference DIR --images DIR…, images made elsewhere are scored against FP images of the same prompts
        and seeds, with the same metrics: prompt i (0-based, in --prompts) and seed s are the file <i:03d>-s<s>.png
        in every folder (what --save-images writes).
        """)

    @Option(name: .long, help: "The full-precision diffusers folder; default: the embedded default model.")
    var model: String?

    @Option(name: .long, parsing: .upToNextOption, help: "Quantized model folders (one or more) to run and compare.")
    var quantized: [String] = []

    @Option(name: .long, help: "Score existing images instead: the folder of full-precision images (<i:03d>-s<seed>.png).")
    var reference: String?

    @Option(name: .long, parsing: .upToNextOption, help: "With --reference: folders of images to score against it (same names).")
    var images: [String] = []

    @Option(name: .long, help: "With --quantized: also write every image to DIR/fp/ and DIR/<model>/ as <i:03d>-s<seed>.png.")
    var saveImages: String?

    @Option(name: .long, help: "Rows (prompt/seed samples) in grid.png; default all.")
    var gridRows: Int?

    @Option(name: .long, help: "Evaluation prompt file (one per line; # comments ignored). Never the calibration prompts.")
    var prompts: String

    @Option(name: .long, help: "Seeds per prompt (0, 1, …, N-1 added to --seed).")
    var seeds: Int = 1

    @Option(name: .long, help: "First seed.")
    var seed: UInt64 = 1000

    @Option(name: .long, help: "Use only the first N prompts.")
    var limit: Int?

    @Option(name: .long, help: "Measure the per-step SQNR on the first N samples only (it doubles the cost); default all.")
    var sqnrSamples: Int?

    @Option(name: .long, help: "Denoising steps.")
    var steps: Int = 20

    @Option(name: .long, help: "Classifier-free guidance scale.")
    var cfg: Float = 7.5

    @Option(name: .shortAndLong, help: "Output folder for report.md, report.json and grid.png (created if missing).")
    var output: String = "eval"

    @Option(name: .long, help: "CPU threads (default: all cores).")
    var threads: Int?

    @Option(name: .long, help: "Where the quantized models run: cpu, or cuda (real 8-bit on an NVIDIA GPU, see docs/GPU.md; no per-step SQNR). The FP reference always runs on the CPU in FP32.")
    var device: ComputeDevice = .cpu

    @Option(name: .long, help: "With --device cuda: fp16 (default) or bf16 storage.")
    var precision: GPUPrecision = .fp16

    func validate() throws {
        if reference != nil || !images.isEmpty {
            guard quantized.isEmpty else { throw ValidationError("give either --quantized (run models) or --reference with --images (score images), not both") }
            guard reference != nil, !images.isEmpty else { throw ValidationError("scoring images needs --reference DIR and at least one --images DIR") }
            guard saveImages == nil else { throw ValidationError("--save-images goes with --quantized") }
        } else {
            guard !quantized.isEmpty else { throw ValidationError("give at least one --quantized folder (or --reference DIR --images DIR to score images)") }
        }
        try OptionLimits.seeds(seed, count: seeds, "--seeds")
        try OptionLimits.steps(steps)
        try OptionLimits.guidance(cfg)
        if precision != .fp16 && device != .cuda { throw ValidationError("--precision applies to --device cuda (the CPU computes in FP32)") }
        if device == .cuda && reference != nil { throw ValidationError("--device applies to --quantized (scoring images runs nothing)") }
    }

    func run() throws {
        try OptionLimits.apply(threads: threads)
        var promptList = try Calibrator.readPrompts(prompts)
        if let limit { promptList = Array(promptList.prefix(max(1, limit))) }
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        if let reference { return try scoreImages(reference: reference, promptList: promptList) }
        let directory = try model ?? DefaultModel.locate()
        let reference = try StableDiffusionPipeline(directory: directory)
        guard reference.nativeSize >= 7 else {  // SSIM's 7×7 window
            throw ValidationError("\(directory) makes \(reference.nativeSize)-pixel images; eval's SSIM needs at least 7×7")
        }
        let models = try quantized.map { path in
            let pipeline = try StableDiffusionPipeline(directory: path, device: device, precision: precision.storageType)
            try reference.requireSameModel(pipeline, otherPath: path, path: directory)
            return pipeline
        }
        let evaluator = QuantizationEvaluator(reference: reference, models: models)
        let names = quantized.map { $0.split(separator: "/").last.map(String.init) ?? $0 }
        var samples: [QuantizationEvaluator.Sample] = []
        var seconds = Array(repeating: 0.0, count: quantized.count)
        var bar = ProgressBar(label: "evaluating")
        bar.restart()
        let total = promptList.count * seeds
        for prompt in promptList {
            for s in 0..<seeds {
                let request = GenerationRequest(prompt: prompt, steps: steps, guidanceScale: cfg, seed: seed + UInt64(s))
                // the teacher-forced SQNR pass runs the quantized UNets on the CPU: not what --device cuda measures
                let measureSQNR = device == .cpu && samples.count < (sqnrSamples ?? Int.max)
                samples.append(try evaluator.evaluate(request, seconds: &seconds, measureSQNR: measureSQNR))
                bar.update(step: samples.count, of: total)
            }
        }
        if let saveImages { try Self.save(samples, names: names, seedsPerPrompt: seeds, to: saveImages) }
        try writeReport(samples: samples, names: names, seconds: seconds, reference: directory, promptCount: promptList.count)
    }

    /// Scores image folders against a reference folder with the same metrics as the models run here.
    func scoreImages(reference: String, promptList: [String]) throws {
        let folders = images
        let samples = try ImageSetComparison.samples(prompts: promptList, seeds: seeds, firstSeed: seed, sets: folders.count) { set, name in
            let path = (set.map { folders[$0] } ?? reference) + "/" + name
            guard FileManager.default.fileExists(atPath: path) else {
                throw ValidationError("\(path) is missing: every folder needs <prompt index:03d>-s<seed>.png for the \(promptList.count) prompts × \(seeds) seeds from seed \(seed)")
            }
            return try PNGDecoder.read(path: path).image
        }
        let names = folders.map { Self.lastComponent($0) }
        try writeReport(samples: samples, names: names, seconds: Array(repeating: 0, count: folders.count), reference: reference,
                        promptCount: promptList.count)
    }

    static func lastComponent(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    /// Writes each sample's images as `<dir>/fp/<name>` and `<dir>/<model>/<name>` (`ImageSetComparison` names).
    /// Sample k is prompt k / seedsPerPrompt (the order `run` generates them in).
    static func save(_ samples: [QuantizationEvaluator.Sample], names: [String], seedsPerPrompt: Int, to directory: String) throws {
        let folders = ["fp"] + names
        for folder in folders { try FileManager.default.createDirectory(atPath: directory + "/" + folder, withIntermediateDirectories: true) }
        for (k, sample) in samples.enumerated() {
            let name = ImageSetComparison.fileName(promptIndex: k / seedsPerPrompt, seed: sample.seed)
            for (folder, image) in zip(folders, sample.images) {
                try AtomicFileWriter.write(try PNGEncoder.encode(image), to: directory + "/" + folder + "/" + name)
            }
        }
    }

    func writeReport(samples: [QuantizationEvaluator.Sample], names: [String], seconds: [Double], reference directory: String,
                     promptCount: Int) throws {
        let total = samples.count
        let summaries = QuantizationEvaluator.summarize(samples, names: names, seconds: seconds)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // SQNR is not measured when images are scored from folders (or with --sqnr-samples 0): NaN.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        struct Report: Encodable {
            var referenceModel: String, prompts: Int, seedsPerPrompt: Int, steps: Int, cfg: Float
            var models: [QuantizationEvaluator.Summary]
            var samples: [SampleRow]
        }
        struct SampleRow: Encodable { var prompt: String; var seed: UInt64; var psnr: [Double]; var ssim: [Double]; var fidelity: [Double?] }
        let report = Report(referenceModel: directory, prompts: promptCount, seedsPerPrompt: seeds, steps: steps, cfg: cfg,
                            models: summaries,
                            samples: samples.map { SampleRow(prompt: $0.prompt, seed: $0.seed, psnr: $0.psnr.map { min($0, ImageMetrics.psnrCap) }, ssim: $0.ssim, fidelity: $0.fidelity) })
        try AtomicFileWriter.write(Array(try encoder.encode(report)), to: output + "/report.json")
        var md = "# Quantization quality vs full precision\n\n"
        md += "Reference: `\(directory)`; \(promptCount) prompts × \(seeds) seeds, \(steps) steps, CFG \(cfg).\n"
        md += "PSNR on 8-bit RGB (identical images count as \(Int(ImageMetrics.psnrCap)) dB); SSIM on luma, 7×7 uniform window (skimage defaults); "
        md += device == .cuda ? "Quantized models run on the GPU (\(precision.rawValue) storage), the FP reference on the CPU (FP32); no SQNR. "
            : "SQNR of the UNet noise prediction on the FP trajectory, mean over steps (on the first \(min(sqnrSamples ?? total, total)) samples). "
        md += "p10 = 10th percentile (worst 10 %).\n\n"
        md += "Fidelity: prompt fidelity (PromptFidelity, points out of 100) of the model's images; Δ = minus the FP images' fidelity on the same samples.\n\n"
        md += "| model | PSNR mean (dB) | PSNR p10 | SSIM mean | SSIM p10 | SQNR mean (dB) | fidelity | Δ fidelity | generation time (s) |\n|---|---|---|---|---|---|---|---|---|\n"
        for s in summaries {
            let fidelity = s.meanFidelity.map { Self.f($0, 1) } ?? "n/a"
            let delta = s.meanFidelity.flatMap { m in s.referenceFidelity.map { Self.f(m - $0, 1) } } ?? "n/a"
            md += "| \(s.model) | \(Self.f(s.meanPSNR)) | \(Self.f(s.p10PSNR)) | \(Self.f(s.meanSSIM, 4)) | \(Self.f(s.p10SSIM, 4)) | \(Self.f(s.meanSQNR)) | \(fidelity) | \(delta) | \(Self.f(s.seconds, 1)) |\n"
        }
        if let reference = summaries.first?.referenceFidelity { md += "\nFP fidelity on the scored samples: \(Self.f(reference, 1)).\n" }
        if let steps = summaries.first(where: { !$0.meanStepSQNR.isEmpty })?.meanStepSQNR.count {
            md += "\nPer-step SQNR (dB):\n\n| model | " + (0..<steps).map { "t\($0)" }.joined(separator: " | ") + " |\n"
            md += "|---|" + String(repeating: "---|", count: steps) + "\n"
            for s in summaries { md += "| \(s.model) | " + s.meanStepSQNR.map { Self.f($0, 1) }.joined(separator: " | ") + " |\n" }
        }
        md += "\nGrid (`grid.png`): one row per prompt/seed; columns FP | " + names.joined(separator: " | ") + ".\n"
        try AtomicFileWriter.write(Array(md.utf8), to: output + "/report.md")
        if let grid = QuantizationEvaluator.grid(Array(samples.prefix(max(1, gridRows ?? samples.count)))) { try PNGEncoder.write(grid, to: output + "/grid.png") }
        print(md)
    }

    static func f(_ v: Double, _ digits: Int = 2) -> String {
        guard v.isFinite else { return v.isNaN ? "n/a" : "∞" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let r = (v * scale).rounded() / scale
        return String(r)
    }
}

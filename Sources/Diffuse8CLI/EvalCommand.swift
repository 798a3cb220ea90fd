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
        abstract: "Compare quantized models with the full-precision model: PSNR, SSIM, per-step SQNR; Markdown + JSON report and an image grid.")

    @Option(name: .long, help: "The full-precision diffusers folder; default: the embedded default model.")
    var model: String?

    @Option(name: .long, parsing: .upToNextOption, help: "Quantized model folders (one or more).")
    var quantized: [String]

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

    func validate() throws {
        guard !quantized.isEmpty else { throw ValidationError("give at least one --quantized folder") }
        guard seeds >= 1 else { throw ValidationError("--seeds must be at least 1") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
    }

    func run() throws {
        if let threads { CPUConfiguration.threadCount = max(1, threads) }
        var promptList = try Calibrator.readPrompts(prompts)
        if let limit { promptList = Array(promptList.prefix(max(1, limit))) }
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        let directory = try model ?? DefaultModel.locate()
        let evaluator = QuantizationEvaluator(reference: try StableDiffusionPipeline(directory: directory),
                                              models: try quantized.map { try StableDiffusionPipeline(directory: $0) })
        let names = quantized.map { $0.split(separator: "/").last.map(String.init) ?? $0 }
        var samples: [QuantizationEvaluator.Sample] = []
        var seconds = Array(repeating: 0.0, count: quantized.count)
        var bar = ProgressBar(label: "evaluating")
        bar.restart()
        let total = promptList.count * seeds
        for prompt in promptList {
            for s in 0..<seeds {
                let request = GenerationRequest(prompt: prompt, steps: steps, guidanceScale: cfg, seed: seed + UInt64(s))
                samples.append(try evaluator.evaluate(request, seconds: &seconds, measureSQNR: samples.count < (sqnrSamples ?? Int.max)))
                bar.update(step: samples.count, of: total)
            }
        }
        let summaries = QuantizationEvaluator.summarize(samples, names: names, seconds: seconds)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        struct Report: Encodable {
            var referenceModel: String, prompts: Int, seedsPerPrompt: Int, steps: Int, cfg: Float
            var models: [QuantizationEvaluator.Summary]
            var samples: [SampleRow]
        }
        struct SampleRow: Encodable { var prompt: String; var seed: UInt64; var psnr: [Double]; var ssim: [Double]; var fidelity: [Double?] }
        let report = Report(referenceModel: directory, prompts: promptList.count, seedsPerPrompt: seeds, steps: steps, cfg: cfg,
                            models: summaries,
                            samples: samples.map { SampleRow(prompt: $0.prompt, seed: $0.seed, psnr: $0.psnr.map { min($0, ImageMetrics.psnrCap) }, ssim: $0.ssim, fidelity: $0.fidelity) })
        try AtomicFileWriter.write(Array(try encoder.encode(report)), to: output + "/report.json")
        var md = "# Quantization quality vs full precision\n\n"
        md += "Reference: `\(directory)`; \(promptList.count) prompts × \(seeds) seeds, \(steps) steps, CFG \(cfg).\n"
        md += "PSNR on 8-bit RGB (identical images count as \(Int(ImageMetrics.psnrCap)) dB); SSIM on luma, 7×7 uniform window (skimage defaults); "
        md += "SQNR of the UNet noise prediction on the FP trajectory, mean over steps (on the first \(min(sqnrSamples ?? total, total)) samples). p10 = 10th percentile (worst 10 %).\n\n"
        md += "Fidelity: prompt fidelity (PromptFidelity, points out of 100) of the model's images; Δ = minus the FP images' fidelity on the same samples.\n\n"
        md += "| model | PSNR mean (dB) | PSNR p10 | SSIM mean | SSIM p10 | SQNR mean (dB) | fidelity | Δ fidelity | generation time (s) |\n|---|---|---|---|---|---|---|---|---|\n"
        for s in summaries {
            let fidelity = s.meanFidelity.map { Self.f($0, 1) } ?? "n/a"
            let delta = s.meanFidelity.flatMap { m in s.referenceFidelity.map { Self.f(m - $0, 1) } } ?? "n/a"
            md += "| \(s.model) | \(Self.f(s.meanPSNR)) | \(Self.f(s.p10PSNR)) | \(Self.f(s.meanSSIM, 4)) | \(Self.f(s.p10SSIM, 4)) | \(Self.f(s.meanSQNR)) | \(fidelity) | \(delta) | \(Self.f(s.seconds, 1)) |\n"
        }
        if let reference = summaries.first?.referenceFidelity { md += "\nFP fidelity on the scored samples: \(Self.f(reference, 1)).\n" }
        md += "\nPer-step SQNR (dB):\n\n| model | " + (0..<(summaries.first?.meanStepSQNR.count ?? 0)).map { "t\($0)" }.joined(separator: " | ") + " |\n"
        md += "|---|" + String(repeating: "---|", count: summaries.first?.meanStepSQNR.count ?? 0) + "\n"
        for s in summaries { md += "| \(s.model) | " + s.meanStepSQNR.map { Self.f($0, 1) }.joined(separator: " | ") + " |\n" }
        md += "\nGrid (`grid.png`): one row per prompt/seed; columns FP | " + names.joined(separator: " | ") + ".\n"
        try AtomicFileWriter.write(Array(md.utf8), to: output + "/report.md")
        if let grid = QuantizationEvaluator.grid(samples) { try PNGEncoder.write(grid, to: output + "/grid.png") }
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

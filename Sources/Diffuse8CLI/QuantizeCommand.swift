import ArgumentParser
import Diffuse8
import Foundation

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Quantize a model's UNet to INT8 or FP8 (percentile quant + SmoothQuant) and write a quantized model folder.",
        discussion: """
        --preset picks the calibration recipe; --calibration, --collect-method, --alpha and --min-calib-prompts
        override its parts. recommended (default): for INT8, Percentile Quant with mean-max on Conv2d inputs,
        SmoothQuant α 0.8 on Linear layers, and max ranges without smoothing when the statistics cover fewer than
        32 prompts; for FP8, max ranges without SmoothQuant (as naive). nvidia: Percentile Quant with min-mean,
        α 0.8 (NVIDIA's diffusers example). naive: max ranges, no SmoothQuant. At level 4 every preset rounds the
        softmax probabilities to FP8 with amax 1 (--probability-amax calibrated: their calibrated max).
        """)

    @Option(name: .long, help: "A diffusers model folder or a single-file SD1.x/SDXL .safetensors checkpoint; default: the embedded default model.")
    var model: String?

    @Option(name: .long, help: "With a single-file --model: a diffusers folder of the same family whose configurations, tokenizers and scheduler replace the family's reference ones (models/configs).")
    var config: String?

    @Option(name: .long, help: "Calibration statistics from `diffuse8 calibrate` (else give --calib-prompts and --calib-steps).")
    var stats: String?

    @OptionGroup var calibrationRun: CalibrationArguments

    @Option(name: .long, help: "Write the statistics of a calibration run made here to this file too.")
    var saveStats: String?

    @Option(name: .long, help: "Number format: int8 or fp8.")
    var format: String = "int8"

    @Option(name: .long, help: "Quantization level: 1 (Conv2d), 2 (+ feed-forward), 2.5 (+ Q/K/V), 3 (+ all Linear), 4 (+ FP8 attention, fp8 only).")
    var level: String = "3"

    @Option(name: .long, help: "Recipe preset: recommended, nvidia or naive (see below).")
    var preset: String = "recommended"

    @Option(name: .long, help: "Conv2d input calibration: max or percentile (default: the preset's).")
    var calibration: String?

    @Option(name: .long, help: "Percentile Quant: fraction p in (0, 1] of the timesteps whose statistics are used.")
    var percentile: Double = 1.0

    @Option(name: .long, help: "Percentile Quant collect method: min-mean, min-max, mean-max or global_min (default: the preset's).")
    var collectMethod: String?

    @Option(name: .long, help: "SmoothQuant α for Linear layers: a number in [0, 1], 'search' (per layer) or 'none' (default: the preset's).")
    var alpha: String?

    @Option(name: .long, help: "Below this many calibration prompts use max ranges without smoothing (0 = never; default: the preset's, 32 for recommended).")
    var minCalibPrompts: Int?

    @Option(name: .long, help: "Level 4: amax of the softmax probabilities' FP8 rounding: 1 or calibrated (their max in statistics calibrated on the CPU).")
    var probabilityAmax: String = "1"

    @Option(name: .long, help: "Grid step of --alpha search.")
    var alphaStep: Float = 0.1

    @Flag(name: .long, help: "Dynamic quantization: per-token activation scales at run time, per-channel weights, no calibration.")
    var dynamic = false

    @Flag(name: .long, help: "FP8: per-output-channel weight scales (default per tensor).")
    var fp8PerChannel = false

    @Flag(name: .long, help: "Print the α chosen for each layer.")
    var verbose = false

    @Option(name: .shortAndLong, help: "Output folder (must not exist).")
    var output: String

    @Option(name: .long, help: "CPU threads (default: all cores).")
    var threads: Int?

    func recipe() throws -> QuantizationRecipe {
        guard let f = QuantizedFormat(rawValue: format.lowercased()) else {
            throw ValidationError("unknown --format '\(format)'; choose int8 or fp8")
        }
        var r: QuantizationRecipe
        do { r = try QuantizationRecipe.preset(named: preset, format: f) } catch let error as QuantizationError {
            throw ValidationError(error.description)
        }
        switch probabilityAmax {
        case "calibrated": r.calibratedProbabilityRange = true
        case "1": r.calibratedProbabilityRange = false
        default: throw ValidationError("unknown --probability-amax '\(probabilityAmax)'; choose calibrated or 1")
        }
        r.level = try QuantizationLevel(parsing: level)
        if let calibration {
            guard let c = CalibrationMethod(rawValue: calibration) else {
                throw ValidationError("unknown --calibration '\(calibration)'; choose max or percentile")
            }
            r.calibration = c
        }
        r.percentile = percentile
        if let collectMethod {
            guard let m = CollectMethod(rawValue: collectMethod) else {
                throw ValidationError("unknown --collect-method '\(collectMethod)'; choose one of \(CollectMethod.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            r.collectMethod = m
        }
        if let alpha { r.smoothing = try SmoothingChoice(parsing: alpha) }
        if let minCalibPrompts {
            guard minCalibPrompts >= 0 else { throw ValidationError("--min-calib-prompts must be 0 or more, got \(minCalibPrompts)") }
            r.minimumCalibrationPrompts = minCalibPrompts
        }
        r.alphaStep = alphaStep
        r.dynamic = dynamic
        r.fp8PerChannelWeights = fp8PerChannel
        try r.validate()
        return r
    }

    func validate() throws {
        do { _ = try recipe() } catch let error as QuantizationError { throw ValidationError(error.description) }
        if dynamic { return }
        if stats != nil && calibrationRun.calibPrompts != nil {
            throw ValidationError("give either --stats FILE or --calib-prompts FILE, not both")
        }
        if stats == nil && (calibrationRun.calibPrompts == nil || calibrationRun.calibSteps == nil) {
            throw ValidationError("static quantization needs --stats FILE, or --calib-prompts FILE with --calib-steps T (or use --dynamic)")
        }
    }

    func run() throws {
        try OptionLimits.apply(threads: threads)
        let recipe = try self.recipe()
        guard !FileManager.default.fileExists(atPath: output) else {  // before hours of calibration, not after
            throw ValidationError("\(output) already exists; remove it or choose another -o")
        }
        let directory = try model ?? DefaultModel.locate()
        let pipeline = try StableDiffusionPipeline(directory: directory, configDirectory: config)
        var statistics: CalibrationStatistics?
        if !dynamic {
            if let stats {
                let s = try CalibrationStatisticsFile.read(stats)
                if let t = calibrationRun.calibSteps, t != s.provenance.steps {
                    throw QuantizationError("\(stats) was calibrated with \(s.provenance.steps) steps, but --calib-steps \(t) was given; recalibrate or drop --calib-steps")
                }
                if !s.isComplete {
                    FileHandleStderr.write("warning: \(stats) covers shards \(s.provenance.shards) of \(s.provenance.shardCount) only\n")
                }
                statistics = s
            } else {
                let prompts = try Calibrator.readPrompts(calibrationRun.calibPrompts!)
                let s = try calibrationRun.calibrate(pipeline, prompts: prompts, options: try calibrationRun.options(steps: calibrationRun.calibSteps!))
                if let saveStats { try CalibrationStatisticsFile.write(s, to: saveStats) }
                statistics = s
            }
        }
        let quantized = try Quantizer.quantize(try pipeline.cpuUNet(), statistics: statistics, recipe: recipe,
                                               log: verbose ? { FileHandleStderr.write($0 + "\n") } : nil)
        if let warning = quantized.recipeWarning { FileHandleStderr.write("warning: \(warning)\n") }
        if !quantized.skippedAttentionModules.isEmpty {
            FileHandleStderr.write("note: \(quantized.skippedAttentionModules.count) attention modules have head_dim % 16 != 0 and stay in full precision\n")
        }
        var source = directory
        if let checkpoint = pipeline.checkpoint {
            // a quantized model is a diffusers folder: a single-file model is written as one first, removed afterwards
            source = output + ".source-\(getpid())"
            TemporaryPaths.register(source)
            // with the reference configurations the tokenizers use the shipped vocabulary; a --config folder has its own
            try checkpoint.writeDiffusersFolder(to: source, configurationFolder: pipeline.folder,
                                                vocabulary: config == nil ? try CLIPVocabulary.locate() : nil)
        }
        defer {
            if source != directory {
                try? FileManager.default.removeItem(atPath: source)
                TemporaryPaths.release(source)
            }
        }
        try QuantizedModelFolder.write(source: source, quantized: quantized, to: output)
        print(output)
    }
}

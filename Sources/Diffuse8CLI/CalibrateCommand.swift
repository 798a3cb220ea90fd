import ArgumentParser
import Diffuse8

/// Options shared by `calibrate` and `quantize` (when it calibrates itself).
struct CalibrationArguments: ParsableArguments {
    @Option(name: .long, help: "Calibration prompt file: one prompt per line; blank lines and # comments are ignored.")
    var calibPrompts: String?

    @Option(name: .long, help: "Denoising steps T of each calibration run (statistics are kept per step).")
    var calibSteps: Int?

    @Option(name: .long, help: "Prompts per calibration batch (a batch's amax is the max over its prompts).")
    var batch: Int = 1

    @Option(name: .long, help: "Classifier-free guidance scale of the calibration runs.")
    var cfg: Float = 7.5

    @Option(name: .long, help: "Seed of prompt 0; prompt k uses seed + k.")
    var seed: UInt64 = 0

    @Option(name: .long, help: "Sampler: \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var scheduler: String = SchedulerKind.euler.rawValue

    @Option(name: .long, help: "Input rows sampled per Linear layer for the SmoothQuant α search (0 = none).")
    var reservoirRows: Int = 256

    func options(steps: Int) throws -> CalibrationOptions {
        guard let kind = SchedulerKind(rawValue: scheduler) else {
            throw ValidationError("unknown scheduler '\(scheduler)'; choose one of \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        try OptionLimits.steps(steps, "--calib-steps")
        guard (1...1000).contains(batch) else { throw ValidationError("--batch \(batch) is outside 1...1000") }
        guard (0...65_536).contains(reservoirRows) else { throw ValidationError("--reservoir-rows \(reservoirRows) is outside 0...65536") }
        try OptionLimits.guidance(cfg)
        var o = CalibrationOptions(steps: steps)
        o.guidanceScale = cfg
        o.seed = seed
        o.batchSize = batch
        o.scheduler = kind
        o.reservoirCapacity = reservoirRows
        return o
    }

    /// Runs the calibration with a progress line on stderr.
    func calibrate(_ pipeline: StableDiffusionPipeline, prompts: [String], options: CalibrationOptions) throws -> CalibrationStatistics {
        var bar = ProgressBar(label: "calibrating")
        bar.restart()
        let statistics = try Calibrator.calibrate(pipeline, prompts: prompts, options: options) { done, total in
            bar.update(step: done, of: total)
            if done == 1 { TestPausePoint.reach("calibration-started") }
        }
        return statistics
    }
}

struct CalibrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate",
        abstract: "Record per-layer, per-step activation statistics of a model's UNet (mergeable .d8s file).")

    @Option(name: .long, help: "A diffusers model folder or a single-file SD1.x/SDXL .safetensors checkpoint; default: the embedded default model.")
    var model: String?

    @Option(name: .long, help: "With a single-file --model: a diffusers folder of the same family whose configurations, tokenizers and scheduler replace the family's reference ones (models/configs).")
    var config: String?

    @OptionGroup var calibration: CalibrationArguments

    @Option(name: .long, help: "Handle shard i of n of the prompt batches (i/n, 0 ≤ i < n); merge the results with merge-stats.")
    var shard: String = "0/1"

    @Option(name: .shortAndLong, help: "Output statistics file (.d8s).")
    var output: String

    @Option(name: .long, help: "CPU threads (default: all cores).")
    var threads: Int?

    @Option(name: .long, help: "Where the networks run: cpu (FP32) or cuda (NVIDIA GPU, 16-bit storage).")
    var device: ComputeDevice = .cpu

    @Option(name: .long, help: "With --device cuda: fp16 (default) or bf16 storage (FP32 arithmetic either way).")
    var precision: GPUPrecision = .fp16

    static func parseShard(_ text: String) throws -> (Int, Int) {
        let parts = text.split(separator: "/").map { Int($0) }
        guard parts.count == 2, let i = parts[0], let n = parts[1], n >= 1, i >= 0, i < n else {
            throw ValidationError("--shard '\(text)' must be i/n with 0 ≤ i < n, e.g. 0/4")
        }
        return (i, n)
    }

    func validate() throws {
        _ = try Self.parseShard(shard)
        guard calibration.calibPrompts != nil else { throw ValidationError("--calib-prompts FILE is required") }
        guard calibration.calibSteps != nil else { throw ValidationError("--calib-steps T is required") }
        if precision != .fp16 && device != .cuda { throw ValidationError("--precision applies to --device cuda (the CPU computes in FP32)") }
    }

    func run() throws {
        try OptionLimits.apply(threads: threads)
        try OutputPaths.checkWritable(output)
        var options = try calibration.options(steps: calibration.calibSteps!)
        (options.shardIndex, options.shardCount) = try Self.parseShard(shard)
        let prompts = try Calibrator.readPrompts(calibration.calibPrompts!)
        let directory = try model ?? DefaultModel.locate()
        let pipeline = try StableDiffusionPipeline(directory: directory, configDirectory: config, device: device,
                                                   precision: precision.storageType, forCalibration: true)
        let statistics = try calibration.calibrate(pipeline, prompts: prompts, options: options)
        try CalibrationStatisticsFile.write(statistics, to: output)
        print(output)
    }
}

struct MergeStatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge-stats",
        abstract: "Merge calibration statistics of shards (same model, T and prompt file) into one file.")

    @Argument(help: "Statistics files (.d8s) to merge.")
    var inputs: [String]

    @Option(name: .shortAndLong, help: "Merged statistics file.")
    var output: String

    func run() throws {
        guard !inputs.isEmpty else { throw ValidationError("give the statistics files to merge") }
        try OutputPaths.checkWritable(output)
        let merged = try CalibrationStatistics.merge(try inputs.map(CalibrationStatisticsFile.read), names: inputs)
        try CalibrationStatisticsFile.write(merged, to: output)
        if !merged.isComplete {
            let missing = Set(0..<merged.provenance.shardCount).subtracting(merged.provenance.shards).sorted()
            FileHandleStderr.write("warning: shards \(missing.map { "\($0)/\(merged.provenance.shardCount)" }.joined(separator: ", ")) are missing; the statistics cover part of the prompts\n")
        }
        print(output)
    }
}

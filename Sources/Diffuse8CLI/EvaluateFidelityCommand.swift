#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Diffuse8
import Diffuse8PNG

struct EvaluateFidelityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate-fidelity",
        abstract: "Generate every prompt of a file and measure how many of their attributes the images show.",
        discussion: """
            Prompts follow the shapes data set's templates (training/dataset.py), e.g. training/heldout_prompts.txt. \
            Each prompt is generated with seeds 0..<N and read back by the prompt-fidelity checker; prints the \
            overall attribute accuracy, the accuracy per attribute kind and the mean per-image score.
            """)

    @Option(name: .long, help: "A diffusers model folder; default: the embedded default model.")
    var model: String?

    @Option(name: .long, help: "Prompts file, one templated caption a line (e.g. training/heldout_prompts.txt).")
    var prompts: String

    @Option(name: .long, help: "Seeds per prompt (0, 1, …, N-1).")
    var seeds: Int = 1

    @Option(name: .long, help: "Denoising steps.")
    var steps: Int = 30

    @Option(name: .long, help: "Classifier-free guidance scale.")
    var cfg: Float = 5

    @Option(name: .long, help: "Sampler: \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var scheduler: String = SchedulerKind.euler.rawValue

    @Option(name: .long, help: "Use only the first K prompts.")
    var limit: Int?

    @Option(name: .long, help: "Write the first 16 images as one PNG grid here (captions in a .txt beside it).")
    var grid: String?

    @Option(name: .shortAndLong, help: "Write all results (per image and per attribute) as JSON here.")
    var output: String?

    @Option(name: .long, help: "CPU threads (default: all cores).")
    var threads: Int?

    static let gridSize = 16

    func validate() throws {
        try OptionLimits.seeds(0, count: seeds, "--seeds")
        try OptionLimits.steps(steps)
        try OptionLimits.guidance(cfg)
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        guard SchedulerKind(rawValue: scheduler) != nil else {
            throw ValidationError("unknown scheduler '\(scheduler)'; choose one of \(SchedulerKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let grid, !grid.lowercased().hasSuffix(".png") { throw ValidationError("--grid must end in .png, got '\(grid)'") }
    }

    func run() throws {
        try OptionLimits.apply(threads: threads)
        for path in [grid, output].compactMap({ $0 }) { try OutputPaths.checkWritable(path) }
        var prompts = try FidelityEvaluation.readPrompts(path: self.prompts)
        if let limit { prompts = Array(prompts.prefix(limit)) }

        let directory = try model ?? DefaultModel.locate()
        FileHandleStderr.write("loading \(directory)\n")
        let pipeline = try StableDiffusionPipeline(directory: directory)
        let options = FidelityEvaluationOptions(steps: steps, guidanceScale: cfg, seeds: seeds,
                                                scheduler: SchedulerKind(rawValue: scheduler)!)
        let interactive = isatty(2) != 0
        let (result, images) = try FidelityEvaluation.run(
            pipeline: pipeline, model: directory, prompts: prompts, options: options,
            keepImages: grid == nil ? 0 : Self.gridSize
        ) { p in
            let line = "prompt \(p.completed)/\(p.total) (seed \(p.seed)): accuracy so far "
                + FidelityEvaluation.fixed(100 * p.accuracySoFar, digits: 1) + "%, "
                + FidelityEvaluation.fixed(p.elapsed, digits: 0) + "s elapsed, ETA " + FidelityEvaluation.fixed(p.remaining, digits: 0) + "s"
            FileHandleStderr.write(interactive ? "\r\(line)\u{1B}[K" + (p.completed == p.total ? "\n" : "") : line + "\n")
        }

        print(result.summary)
        if let output {
            try result.writeJSON(to: output)
            print("results: \(output)")
        }
        if let grid, !images.isEmpty {
            try PNGEncoder.write(ImageGrid.compose(images), to: grid)
            let captions = zip(images.indices, result.samples).map { index, sample in
                "\(index + 1)\tseed \(sample.seed)\tscore \(FidelityEvaluation.fixed(sample.score, digits: 3))\t\(sample.prompt)"
            }
            let sidecar = String(grid.dropLast(4)) + ".txt"
            try AtomicFileWriter.write(Array((captions.joined(separator: "\n") + "\n").utf8), to: sidecar)
            print("grid: \(grid) (captions: \(sidecar))")
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
import Diffuse8

/// Whole-UNet checks on the GPU: parity of `CUDAUNet` (FP16) with the CPU `UNet2DConditionModel` (FP32),
/// and timing of `CUDAUNet.forward` (what `diffuse8-cuda-selftest --unet` / `--unet-bench` run).
public enum CUDAUNetCheck {
    /// The issue's bar for FP16 vs FP32 UNet output.
    public static let parityLimit = 5e-3

    /// The limit for a storage type: the issue's 5e-3 for FP16; 2e-2 for BF16 (ours: BF16 keeps 8 significant bits
    /// to FP16's 11, so its rounding error is 4× larger).
    public static func parityLimit(for type: CUDADataType) -> Double { type == .bfloat16 ? 2e-2 : parityLimit }

    /// The limit for a quantized UNet against the CPU simulation of the same folder: a value within 16-bit rounding
    /// of a quantization step boundary can land one INT8/FP8 step away, so differences exceed plain FP16's.
    public static let quantizedParityLimit = 2e-2

    public struct Parity: Sendable {
        public let directory: String
        public let inputShape: [Int]
        /// ‖gpu − cpu‖ / ‖cpu‖ of the UNet output.
        public let relativeL2: Double
        public let nonFinite: Int
        public var limit = parityLimit
        public var passed: Bool { nonFinite == 0 && relativeL2 <= limit }
    }

    /// Inputs for one evaluation: FP16-rounded normal samples (the CPU model sees the same rounded values).
    struct Inputs {
        var sample: Tensor
        var encoderHiddenStates: Tensor
        var textEmbeds: Tensor?
        var timeIds: Tensor?
        var timestep: Float
    }

    static func randomInputs(_ c: UNetConfiguration, batch: Int, height: Int, width: Int, contextLength: Int,
                             seed: UInt64) -> Inputs {
        var random = SelfTestRandom(seed: seed)
        var inputs = Inputs(sample: random.normalHalfRounded([batch, c.inChannels, height, width]),
                            encoderHiddenStates: random.normalHalfRounded([batch, contextLength, c.crossAttentionDim[0]]),
                            timestep: 501)
        if c.usesTextTimeEmbedding, let timeWidth = c.additionTimeEmbedDim, let total = c.projectionClassEmbeddingsInputDim {
            inputs.textEmbeds = random.normalHalfRounded([batch, total - 6 * timeWidth])
            inputs.timeIds = Tensor(shape: [batch, 6], scalars: (0..<batch).flatMap { _ in [1024, 1024, 0, 0, 1024, 1024] as [Float] })
        }
        return inputs
    }

    /// Loads `directory` (a diffusers `unet/` folder) on both backends and compares one evaluation (the GPU's second).
    public static func parity(directory: String, kernels: CUDAKernels, batch: Int = 2, height: Int, width: Int,
                              contextLength: Int = 77, seed: UInt64 = 0xC0DA, alternative: Alternative? = nil) throws -> Parity {
        let model = try QuantizedModelFolder.loadUNet(directory: directory)  // plain, or quantized (CPU simulation)
        let unet = try CUDAUNet(model, kernels: kernels, keepHostWeights: true)
        alternative?.apply(unet.backend)
        let inputs = randomInputs(model.configuration, batch: batch, height: height, width: width, contextLength: contextLength, seed: seed)
        let context = kernels.context
        // The second of two evaluations: the first decides which modules run fused paths, and later ones (every step of
        // a sampling loop after the first) run the forms that follow from them, e.g. level 4's Q/K/V writing codes.
        var output: CUDATensor?
        for _ in 0..<2 {
            output = try unet.forward(sample: kernels.upload(inputs.sample), timestep: inputs.timestep,
                                      encoderHiddenStates: kernels.upload(inputs.encoderHiddenStates),
                                      textEmbeds: inputs.textEmbeds.map { try kernels.upload($0) }, timeIds: inputs.timeIds)
        }
        guard let output else { throw CUDAError.invalidArgument("parity: no evaluation ran") }
        let gpu = try context.download(output)
        let cpu = model(sample: inputs.sample, timestep: inputs.timestep, encoderHiddenStates: inputs.encoderHiddenStates,
                        textEmbeds: inputs.textEmbeds, timeIds: inputs.timeIds)
        let nonFinite = gpu.scalars.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
        return Parity(directory: directory, inputShape: inputs.sample.shape, relativeL2: gpu.relativeL2(to: cpu), nonFinite: nonFinite,
                      limit: QuantizedModelFolder.isQuantized(unetDirectory: directory) ? quantizedParityLimit
                          : parityLimit(for: kernels.storageType))
    }

    public struct Timing: Sendable {
        public let directory: String
        public let inputShape: [Int]
        public let loadSeconds: Double
        public let medianMilliseconds: Double
        public let minimumMilliseconds: Double
        public let runs: Int
        /// Most device memory the allocator held (weights included) after the first (autotuning) forward and
        /// `releaseUnusedWeightLayouts`.
        public let peakBytes: Int
        /// Relative L2 of the last timed forward's output vs. `reference`'s `output` when one was given.
        public let relativeL2VersusReference: Double?
        /// The same forward replayed as a CUDA graph (`CUDAUNetGraph`): median, minimum, and its output's
        /// relative L2 vs. the eager forward's; or why capture failed.
        public var graphMedianMilliseconds: Double?
        public var graphMinimumMilliseconds: Double?
        public var graphRelativeL2VersusEager: Double?
        public var graphError: String?
        public var graphPeakBytes: Int?
        /// Milliseconds per operation kind of one profiled forward (`CUDAUNet.profile`), when asked for.
        public var profile: [String: Double]?
        /// Device bytes held once the weights are uploaded (before the first forward).
        public var weightBytes = 0
        /// Quantized Linear layers run as real 8-bit GEMMs, and quantized layers simulated (with the reasons).
        public var eightBitLayers = 0
        public var simulatedLayers: [String: Int] = [:]
        /// Per layer, one forward (`CUDABackend.layerReport`), when asked for.
        public var layerReport: [CUDALayerTiming]?
        /// Seconds of the first forward (kernel compilation and tuning included), and the context's tuning counts
        /// after the benchmark (`CUDATuningTable.Statistics`: problems timed, taken from the on-disk record, dropped).
        public var firstForwardSeconds = 0.0
        package var tuning = CUDATuningTable.Statistics()
        /// With an `Alternative`: both graphs replayed in turn, `repeats` rounds (the same clocks and host for both).
        public var alternation: Alternation?

        /// Graph replays of the forward as configured (A) and with the alternative applied (B), interleaved.
        public struct Alternation: Sendable {
            public var label: String
            public var medianA = 0.0, minimumA = 0.0, medianB = 0.0, minimumB = 0.0
            /// B's eager output vs `reference`'s `output`, vs A's eager output (0 where the change keeps the
            /// arithmetic), and B's graph vs B's eager output.
            public var relativeL2BVersusReference: Double?
            public var relativeL2BVersusA = 0.0
            public var graphRelativeL2BVersusEager = 0.0
            var json: String {
                "{\"label\": \"\(label)\", \"graph_median_ms_a\": \(medianA), \"graph_min_ms_a\": \(minimumA), "
                    + "\"graph_median_ms_b\": \(medianB), \"graph_min_ms_b\": \(minimumB), "
                    + "\"rel_l2_b_vs_reference\": \(Timing.number(relativeL2BVersusReference)), \"rel_l2_b_vs_a\": \(relativeL2BVersusA), "
                    + "\"graph_rel_l2_b_vs_eager\": \(graphRelativeL2BVersusEager)}"
            }
        }

        static func number(_ x: Double?) -> String { x.map { $0.isFinite ? "\($0)" : "null" } ?? "null" }

        /// One JSON object (the benchmark script parses it).
        public var json: String {
            "{\"directory\": \"\(directory)\", \"input_shape\": \(inputShape), \"load_s\": \(loadSeconds), "
                + "\"median_ms\": \(medianMilliseconds), \"min_ms\": \(minimumMilliseconds), \"runs\": \(runs), "
                + "\"peak_bytes\": \(peakBytes), \"rel_l2_vs_reference\": \(Self.number(relativeL2VersusReference)), "
                + "\"graph_median_ms\": \(Self.number(graphMedianMilliseconds)), \"graph_min_ms\": \(Self.number(graphMinimumMilliseconds)), "
                + "\"graph_rel_l2_vs_eager\": \(Self.number(graphRelativeL2VersusEager)), \"graph_peak_bytes\": \(graphPeakBytes.map { "\($0)" } ?? "null"), "
                + "\"profile_ms\": \(profile.map { p in "{" + p.sorted { $0.value > $1.value }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}" } ?? "null"), "
                + "\"first_forward_s\": \(firstForwardSeconds), \"tuning\": {\"timed\": \(tuning.timed), \"from_record\": \(tuning.recorded), "
                + "\"untimed\": \(tuning.untimed), \"dropped\": \(tuning.rejected)}, "
                + "\"weight_bytes\": \(weightBytes), \"eight_bit_layers\": \(eightBitLayers), "
                + "\"simulated_layers\": {" + simulatedLayers.sorted { $0.key < $1.key }.map { "\"\($0.key.replacing("\"", with: "'"))\": \($0.value)" }.joined(separator: ", ") + "}, "
                + "\"alternation\": \(alternation?.json ?? "null"), "
                + "\"graph_error\": \(graphError.map { "\"" + $0.replacing("\"", with: "'").replacing("\n", with: " ") + "\"" } ?? "null")}"
        }
    }

    /// A second configuration of the same loaded UNet to time against the first (`benchmark`'s `alternative`):
    /// a name, and what it changes on the backend.
    public struct Alternative {
        public var label: String
        public var apply: (CUDABackend) -> Void
        public init(label: String, apply: @escaping (CUDABackend) -> Void) {
            self.label = label
            self.apply = apply
        }
    }

    /// Times `CUDAUNet.forward` on `directory`: `warmup` runs (kernel compilation, convolution autotuning, GEMM
    /// plans), then `repeats` runs each between two CUDA events; median and minimum.
    /// `reference`: a safetensors file with `sample`, `encoder_hidden_states`, `timestep` [1], optionally
    /// `text_embeds`, `time_ids`, and `output` (e.g. diffusers' FP16 output for those inputs) — its inputs are
    /// used and the output compared. Without it, random inputs of the given shape. `graph`: also capture the
    /// forward as a CUDA graph (`CUDAUNetGraph`) and time its replays. `profile`: one more forward with
    /// `CUDAUNet.profile` on (milliseconds per operation kind). `alternative` (with `graph`): after that, the backend
    /// changed by it, a second graph captured, and the two replayed in turn (`Timing.alternation`); differences
    /// between processes (clocks, host) are as large as the ones such a comparison looks for.
    public static func benchmark(directory: String, kernels: CUDAKernels, batch: Int = 2, height: Int = 64, width: Int = 64,
                                 contextLength: Int = 77, reference: String? = nil, warmup: Int = 3,
                                 repeats: Int = 20, graph: Bool = true, profile: Bool = false, quantize recipe: QuantizationRecipe? = nil,
                                 explain: Bool = false, quantizesInProducers: Bool = true, cudnnFP8Attention: Bool = true,
                                 unroundedQKV: Bool = CUDABackend.skipsQKVRoundingDefault,
                                 alternative: Alternative? = nil) throws -> Timing {
        let context = kernels.context
        let start = CUDAKernelCompiler.now()
        let unet = try recipe.map {
            try CUDAUNet(quantizedForBenchmark(directory: directory, kernels: kernels, recipe: $0, batch: batch, height: height,
                                               width: width, contextLength: contextLength).model, kernels: kernels)
        } ?? CUDAUNet.load(directory: directory, kernels: kernels)
        unet.backend.quantizesInProducers = quantizesInProducers
        unet.backend.usesCuDNNFP8Attention = cudnnFP8Attention
        unet.backend.skipsQKVRoundingForCuDNN = unroundedQKV
        try context.synchronize()
        let loadSeconds = CUDAKernelCompiler.now() - start
        let weightBytes = context.allocatorStatistics.liveBytes
        var inputs = randomInputs(unet.configuration, batch: batch, height: height, width: width, contextLength: contextLength, seed: 0xBE4C)
        var expected: Tensor?
        if let reference {
            let file = try SafetensorsFile(path: reference)
            inputs.sample = try file.tensor(named: "sample")
            inputs.encoderHiddenStates = try file.tensor(named: "encoder_hidden_states")
            inputs.timestep = try file.tensor(named: "timestep").scalars[0]
            if unet.configuration.usesTextTimeEmbedding {
                inputs.textEmbeds = try file.tensor(named: "text_embeds")
                inputs.timeIds = try file.tensor(named: "time_ids")
            }
            expected = try file.tensor(named: "output")
        }
        let sample = try kernels.upload(inputs.sample), states = try kernels.upload(inputs.encoderHiddenStates)
        let textEmbeds = try inputs.textEmbeds.map { try kernels.upload($0) }
        func run() throws -> CUDATensor {
            try unet.forward(sample: sample, timestep: inputs.timestep, encoderHiddenStates: states, textEmbeds: textEmbeds,
                             timeIds: inputs.timeIds)
        }
        let firstStart = CUDAKernelCompiler.now()
        var output = try run()
        try context.synchronize()
        let firstForwardSeconds = CUDAKernelCompiler.now() - firstStart
        // The per-shape convolution choices are made: drop the unused weight layouts, and count the peak from here
        // (weights + one forward's working set) — the first forward's measurements allocate extra candidates.
        unet.releaseUnusedWeightLayouts()
        try context.synchronize()
        try context.releaseCachedMemory()
        context.resetPeakMemory()
        for _ in 1..<max(warmup, 1) { output = try run() }
        try context.synchronize()
        let begin = try CUDAEvent(context), end = try CUDAEvent(context)
        var times: [Double] = []
        for _ in 0..<repeats {
            try begin.record(on: context.stream)
            output = try run()
            try end.record(on: context.stream)
            times.append(try end.milliseconds(since: begin))
        }
        times.sort()
        // the output of the forward as it now runs (the first one decides the fused paths later forwards take)
        let relativeL2 = try expected.map { try context.download(output).relativeL2(to: $0) }
        var timing = Timing(directory: directory, inputShape: inputs.sample.shape, loadSeconds: loadSeconds,
                            medianMilliseconds: times[times.count / 2], minimumMilliseconds: times[0], runs: repeats,
                            peakBytes: context.peakAllocatorBytes, relativeL2VersusReference: relativeL2)
        timing.weightBytes = weightBytes
        timing.firstForwardSeconds = firstForwardSeconds
        timing.eightBitLayers = unet.backend.eightBitLayerCount
        for (_, reason) in unet.backend.simulatedLayers { timing.simulatedLayers[reason, default: 0] += 1 }
        if explain {
            unet.backend.layerReport = []
            _ = try run()
            try context.synchronize()
            timing.layerReport = unet.backend.layerReport
            unet.backend.layerReport = nil
        }
        if profile {
            unet.profile = [:]
            _ = try run()
            try context.synchronize()
            timing.profile = unet.profile
            unet.profile = nil
        }
        timing.tuning = context.tuning.statistics
        guard graph else { return timing }
        do {
            /// The forward as the backend now runs it, captured: a replay that returns the graph's output.
            func captureForward() throws -> () throws -> CUDATensor {
                let captured = try CUDAUNetGraph(unet, batch: inputs.sample.shape[0], height: inputs.sample.shape[2],
                                                 width: inputs.sample.shape[3], contextLength: inputs.encoderHiddenStates.shape[1],
                                                 textEmbedsWidth: inputs.textEmbeds?.shape[1])
                return {
                    try captured.forward(sample: sample, timestep: inputs.timestep, encoderHiddenStates: states,
                                         textEmbeds: textEmbeds, timeIds: inputs.timeIds)
                }
            }
            func milliseconds(_ replay: () throws -> CUDATensor) throws -> Double {
                try begin.record(on: context.stream)
                _ = try replay()
                try end.record(on: context.stream)
                return try end.milliseconds(since: begin)
            }
            let eager = try context.download(output)
            let replay = try captureForward()
            timing.graphRelativeL2VersusEager = try context.download(replay()).relativeL2(to: eager)
            for _ in 0..<warmup { _ = try replay() }
            let graphTimes = try (0..<repeats).map { _ in try milliseconds(replay) }.sorted()
            timing.graphMedianMilliseconds = graphTimes[graphTimes.count / 2]
            timing.graphMinimumMilliseconds = graphTimes[0]
            timing.graphPeakBytes = context.peakAllocatorBytes
            if let alternative {
                alternative.apply(unet.backend)
                var result = Timing.Alternation(label: alternative.label)
                for _ in 0..<max(warmup, 1) { output = try run() }
                let eagerB = try context.download(output)
                result.relativeL2BVersusReference = expected.map { eagerB.relativeL2(to: $0) }
                result.relativeL2BVersusA = eagerB.relativeL2(to: eager)
                let replayB = try captureForward()
                result.graphRelativeL2BVersusEager = try context.download(replayB()).relativeL2(to: eagerB)
                for _ in 0..<warmup { _ = try replayB() }
                var timesA: [Double] = [], timesB: [Double] = []
                for _ in 0..<repeats {
                    timesA.append(try milliseconds(replay))
                    timesB.append(try milliseconds(replayB))
                }
                timesA.sort()
                timesB.sort()
                (result.medianA, result.minimumA) = (timesA[timesA.count / 2], timesA[0])
                (result.medianB, result.minimumB) = (timesB[timesB.count / 2], timesB[0])
                timing.alternation = result
            }
        } catch {
            timing.graphError = "\(error)"
        }
        timing.tuning = context.tuning.statistics
        return timing
    }
}

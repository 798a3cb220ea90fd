import Diffuse8
/// Whole-pipeline checks on the GPU (what `diffuse8-cuda-selftest --text/--pipeline/--generate-bench` run):
/// the CUDA text encoders vs the CPU ones, CUDA-generated images vs CPU-generated images of the same seed,
/// and end-to-end generation timing.
public enum CUDAPipelineCheck {
    /// The bar: an FP16 CUDA image within 40 dB PSNR of the FP32 CPU image of the same seed.
    public static let imagePSNRLimit = 40.0
    /// The bar for a quantized folder (8-bit layers simulated on both devices) against the CPU image.
    public static let quantizedImagePSNRLimit = 35.0
    /// The bar for the on-device sampling loop against host stepping on the same GPU (final latents, relative L2): the
    /// coefficient form rounds differently in FP32 and the 16-bit UNet input then sometimes rounds the other way, so
    /// the two differ by about as much as the GPU and the CPU do (6–8e-4 on the default model); the FP16 UNet bar.
    public static let deviceLoopLimit = 5e-3
    /// The same bar for a quantized folder: a value within rounding of a quantization step boundary lands one 8-bit
    /// step away, so small differences grow as they do between the CPU and the GPU (2.2–3.9e-2 in final latents).
    public static let quantizedDeviceLoopLimit = 5e-2
    /// Text encoder outputs, FP16 vs FP32 (relative L2).
    public static let textParityLimit = 5e-3

    public struct TextParity: Sendable {
        public let directory: String
        /// Relative L2 of last hidden state, penultimate hidden state, pooled (projected) output.
        public let last: Double, penultimate: Double, pooled: Double
        public var limit = textParityLimit
        public var passed: Bool { [last, penultimate, pooled].allSatisfy { $0.isFinite && $0 <= limit } }
    }

    /// Encodes `prompts` with `directory/text_encoder_name` on both backends (tokenized by `tokenizer_name`).
    public static func textParity(directory: String, encoder: String = "text_encoder", tokenizer: String = "tokenizer",
                                  prompts: [String], kernels: CUDAKernels) throws -> TextParity {
        let tokens = try CLIPTokenizer(directory: directory + "/" + tokenizer)
        let model = try CLIPTextModel.load(directory: directory + "/" + encoder)
        let gpuModel = try CUDACLIPTextModel(model, kernels: kernels, keepHostWeights: true)
        let ids = prompts.map { tokens.tokenize($0).ids }
        let cpu = try model.encode(ids), gpu = try gpuModel.encode(ids)
        return TextParity(directory: directory + "/" + encoder,
                          last: gpu.lastHiddenState.relativeL2(to: cpu.lastHiddenState),
                          penultimate: gpu.penultimateHiddenState.relativeL2(to: cpu.penultimateHiddenState),
                          pooled: gpu.pooled.relativeL2(to: cpu.pooled),
                          limit: CUDAUNetCheck.parityLimit(for: kernels.storageType))
    }

    public struct ImageParity: Sendable {
        public let directory: String
        public let size: (width: Int, height: Int)
        /// PSNR (8-bit RGB) of the CUDA image against the CPU image.
        public let psnr: Double
        /// Relative L2 of the final latents.
        public let latentRelativeL2: Double
        /// Relative L2 between the GPU's on-device sampling loop and the same GPU pipeline stepping on the host (nil
        /// when the scheduler has no on-device loop).
        public var deviceLoopVersusHostLoop: Double?
        /// The PSNR bar this folder is held to (`imagePSNRLimit`, or `quantizedImagePSNRLimit`).
        public var limit = imagePSNRLimit
        /// The bar for `deviceLoopVersusHostLoop` (`deviceLoopLimit`, or `quantizedDeviceLoopLimit`).
        public var deviceLoopLimit = CUDAPipelineCheck.deviceLoopLimit
        public var passed: Bool { psnr >= limit && (deviceLoopVersusHostLoop ?? 0) <= deviceLoopLimit }
    }

    /// Generates `request` with the CPU (FP32) and the CUDA (`precision`) pipeline of `directory` and compares them.
    public static func imageParity(directory: String, request: GenerationRequest, precision: CUDADataType = .float16) throws -> ImageParity {
        try imageParity(directory: directory, requests: [request], precision: precision)[0]
    }

    /// `imageParity` for several requests with the same two pipelines (e.g. several seeds: one image of a quantized
    /// folder is a single draw of how far rounding differences grow over the steps). The on-device loop is compared
    /// with host stepping on the first request only.
    public static func imageParity(directory: String, requests: [GenerationRequest], precision: CUDADataType = .float16) throws -> [ImageParity] {
        let reference = try StableDiffusionPipeline(directory: directory, device: .cpu, quantizedExecution: .simulated)
        let pipeline = try StableDiffusionPipeline(directory: directory, device: .cuda, precision: precision)
        let quantized = QuantizedModelFolder.isQuantized(unetDirectory: directory + "/unet")
        return try requests.enumerated().map { index, request in
            let cpu = try reference.generate(request), gpu = try pipeline.generate(request)
            let a = ImageConversion.pixelImages(fromDecoded: cpu.image)[0], b = ImageConversion.pixelImages(fromDecoded: gpu.image)[0]
            var parity = ImageParity(directory: directory, size: (a.width, a.height), psnr: ImageMetrics.psnr(a, b),
                                     latentRelativeL2: gpu.latents.relativeL2(to: cpu.latents))
            if quantized {
                parity.limit = quantizedImagePSNRLimit
                parity.deviceLoopLimit = quantizedDeviceLoopLimit
            }
            let scheduler = try request.scheduler.makeScheduler(config: pipeline.schedulerConfiguration, steps: request.steps)
            if index == 0, scheduler.samplerSteps() != nil, let predictor = pipeline.noisePredictor as? CUDANoisePredictor {
                predictor.runsSamplingLoopOnDevice = false
                parity.deviceLoopVersusHostLoop = try gpu.latents.relativeL2(to: pipeline.generate(request).latents)
                predictor.runsSamplingLoopOnDevice = true
            }
            return parity
        }
    }

    /// Two pipelines of `directory` in one process, FP16 and BF16 (each with its own kernels on the shared context),
    /// used in turn — FP16, BF16, FP16 again: the PSNR of each image against the CPU image. Each must meet the
    /// single-pipeline bar, and the second FP16 image must equal the first (the BF16 pipeline did not disturb it).
    public static func mixedPrecision(directory: String, request: GenerationRequest) throws -> (fp16: Double, bf16: Double, repeatIdentical: Bool) {
        let cpu = try StableDiffusionPipeline(directory: directory, device: .cpu, quantizedExecution: .simulated).generate(request)
        let half = try StableDiffusionPipeline(directory: directory, device: .cuda, precision: .float16)
        let brain = try StableDiffusionPipeline(directory: directory, device: .cuda, precision: .bfloat16)
        let first = try half.generate(request), second = try brain.generate(request), again = try half.generate(request)
        let reference = ImageConversion.pixelImages(fromDecoded: cpu.image)[0]
        func psnr(_ r: GenerationResult) -> Double { ImageMetrics.psnr(reference, ImageConversion.pixelImages(fromDecoded: r.image)[0]) }
        return (psnr(first), psnr(second), first.latents.scalars == again.latents.scalars)
    }

    /// Calibration statistics of `directory` computed on the CPU (FP32) and on the GPU (16-bit storage) with the same
    /// prompts and options: the same layers, keys and counts, and amax values that agree up to 16-bit rounding.
    public struct CalibrationParity: Sendable {
        public let layers: Int
        /// Relative L2 over every layer's per-step max amax, per-channel amax, Q/K/V output amax and max attention
        /// probability.
        public let amaxRelativeL2: Double
        /// Relative L2 of the sampled rows (same row keys on both sides).
        public let rowsRelativeL2: Double
        /// Layer names, kinds, batch counts and reservoir keys are identical.
        public let sameStructure: Bool
        public let cpuSeconds: Double, gpuSeconds: Double
        public static let limit = 1e-2
        public var passed: Bool { sameStructure && amaxRelativeL2 <= Self.limit && rowsRelativeL2 <= Self.limit }
    }

    public static func calibrationParity(directory: String, prompts: [String], options: CalibrationOptions,
                                         precision: CUDADataType = .float16) throws -> CalibrationParity {
        let clock = ContinuousClock()
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }
        var cpu: CalibrationStatistics?, gpu: CalibrationStatistics?
        let cpuTime = try clock.measure {
            cpu = try Calibrator.calibrate(StableDiffusionPipeline(directory: directory, device: .cpu), prompts: prompts, options: options)
        }
        let gpuPipeline = try StableDiffusionPipeline(directory: directory, device: .cuda, precision: precision, forCalibration: true)
        let gpuTime = try clock.measure { gpu = try Calibrator.calibrate(gpuPipeline, prompts: prompts, options: options) }
        guard let cpu, let gpu else { throw CUDAError.invalidArgument("calibration produced no statistics") }
        func amax(_ s: CalibrationStatistics) -> [Float] {
            s.layers.flatMap { $0.amaxMax + ($0.channelAmax ?? []) + ($0.outputAmax ?? []) + ($0.probabilityAmax ?? []) }
        }
        func rows(_ s: CalibrationStatistics) -> [Float] { s.layers.flatMap { $0.reservoir?.rows ?? [] } }
        let same = cpu.layers.count == gpu.layers.count && zip(cpu.layers, gpu.layers).allSatisfy {
            $0.name == $1.name && $0.kind == $1.kind && $0.batchCount == $1.batchCount && $0.reservoir?.keys == $1.reservoir?.keys
        }
        func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
            guard a.count == b.count, !a.isEmpty else { return a.count == b.count ? 0 : .infinity }
            return Tensor(shape: [b.count], scalars: b).relativeL2(to: Tensor(shape: [a.count], scalars: a))
        }
        return CalibrationParity(layers: cpu.layers.count, amaxRelativeL2: relativeL2(amax(cpu), amax(gpu)),
                                 rowsRelativeL2: relativeL2(rows(cpu), rows(gpu)), sameStructure: same,
                                 cpuSeconds: seconds(cpuTime), gpuSeconds: seconds(gpuTime))
    }

    /// End-to-end generation time on `device`: `warmup` untimed images (on the GPU: kernel compilation, autotuning,
    /// graph capture), then `repeats` timed ones; medians per phase; on the GPU, peak memory of the caching allocator.
    public struct GenerationTiming: Sendable {
        public let directory: String
        public let width: Int, height: Int, steps: Int
        public let loadSeconds: Double
        public let medianSeconds: Double, minimumSeconds: Double
        public let medianEncodeSeconds: Double, medianDenoiseSeconds: Double, medianDecodeSeconds: Double
        public let runs: [Double]
        /// GPU only: the allocator's peak (live + cached) during the timed runs, after the warm-up's autotuning
        /// scratch was released, and the peak including the warm-up.
        public let peakBytes: Int?
        public let warmupPeakBytes: Int?

        public var json: String {
            "{\"directory\": \"\(directory)\", \"width\": \(width), \"height\": \(height), \"steps\": \(steps), "
                + "\"load_s\": \(loadSeconds), \"median_s\": \(medianSeconds), \"min_s\": \(minimumSeconds), "
                + "\"median_encode_s\": \(medianEncodeSeconds), \"median_denoise_s\": \(medianDenoiseSeconds), "
                + "\"median_decode_s\": \(medianDecodeSeconds), \"runs_s\": \(runs), \"peak_bytes\": \(peakBytes.map(String.init) ?? "null"), "
                + "\"warmup_peak_bytes\": \(warmupPeakBytes.map(String.init) ?? "null")}"
        }
    }

    /// `hostLoop`: step on the host even on the GPU (to measure what the on-device loop saves).
    public static func generationBenchmark(directory: String, device: ComputeDevice = .cuda, precision: CUDADataType = .float16,
                                           request: GenerationRequest, warmup: Int = 1, repeats: Int = 5, hostLoop: Bool = false,
                                           progress: ((String) -> Void)? = nil) throws -> GenerationTiming {
        let start = CUDAKernelCompiler.now()
        let pipeline = try StableDiffusionPipeline(directory: directory, device: device, precision: precision)
        (pipeline.noisePredictor as? CUDANoisePredictor)?.runsSamplingLoopOnDevice = !hostLoop
        let loadSeconds = CUDAKernelCompiler.now() - start
        let context = device == .cuda ? try CUDAContext.shared() : nil
        for i in 0..<warmup {
            let r = try pipeline.generate(request)
            progress?("warm-up \(i + 1)/\(warmup): \(r.timings.total) s")
        }
        let warmupPeak = context?.peakAllocatorBytes
        try context?.releaseCachedMemory()
        context?.resetPeakMemory()
        var results: [GenerationTimings] = []
        for i in 0..<max(1, repeats) {
            let r = try pipeline.generate(request)
            results.append(r.timings)
            progress?("run \(i + 1)/\(repeats): \(r.timings.total) s (text \(r.timings.encode), denoise \(r.timings.denoise), decode \(r.timings.decode))")
        }
        func median(_ values: [Double]) -> Double { let s = values.sorted(); return s[s.count / 2] }
        let totals = results.map(\.total)
        return GenerationTiming(directory: directory, width: request.width ?? pipeline.nativeSize, height: request.height ?? pipeline.nativeSize,
                                steps: request.steps, loadSeconds: loadSeconds, medianSeconds: median(totals),
                                minimumSeconds: totals.min()!, medianEncodeSeconds: median(results.map(\.encode)),
                                medianDenoiseSeconds: median(results.map(\.denoise)), medianDecodeSeconds: median(results.map(\.decode)),
                                runs: totals, peakBytes: context?.peakAllocatorBytes, warmupPeakBytes: warmupPeak)
    }
}

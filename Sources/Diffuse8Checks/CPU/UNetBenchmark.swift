#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Diffuse8

/// Times `UNet2DConditionModel` forward passes on the CPU, with the inputs a text-to-image step feeds it:
/// batch 2 (classifier-free guidance) by default, a square latent of the config's `sample_size` (or the
/// given size), a 77-token context of `cross_attention_dim`, and for SDXL (`text_time`) pooled text
/// embeddings and the six time ids (size, crop (0, 0), target size in pixels).
///
/// Inputs are deterministic pseudo-random values (not torch.randn); timings do not depend on them.
/// The PyTorch side of the comparison is `bench/torch_unet_cpu.py`.
public struct UNetBenchmark {
    public struct Options: Sendable {
        public var batch: Int = 2
        /// Latent height and width; nil uses the config's `sample_size`.
        public var latentSize: Int? = nil
        public var warmup: Int = 1
        public var iterations: Int = 5
        public var timestep: Float = 500
        public init(batch: Int = 2, latentSize: Int? = nil, warmup: Int = 1, iterations: Int = 5, timestep: Float = 500) {
            self.batch = batch
            self.latentSize = latentSize
            self.warmup = warmup
            self.iterations = iterations
            self.timestep = timestep
        }
    }

    public struct Report: Sendable {
        public var directory: String
        public var batch: Int
        public var latentSize: Int
        public var threads: Int
        /// Seconds spent loading the weights (not part of the timing).
        public var loadSeconds: Double
        public var result: BenchmarkResult
        /// How a quantized UNet's layers ran: "simulated", or the INT8 kernel variant; nil for a plain UNet.
        public var quantizedExecution: String? = nil

        public var json: String {
            "{\"model\": \"\(directory)\", \"batch\": \(batch), \"latent\": \(latentSize), \"threads\": \(threads), "
                + (quantizedExecution.map { "\"quantized\": \"\($0)\", " } ?? "")
                + "\"load_s\": \((loadSeconds * 1000).rounded() / 1000), \"timing\": \(result.json)}"
        }
    }

    public let directory: String
    public let model: UNet2DConditionModel
    public let loadSeconds: Double

    /// Loads a diffusers `unet/` folder, plain or quantized (run as the CPU pipeline runs it:
    /// `QuantizedExecution.cpuDefault`).
    public init(directory: String) throws {
        let clock = ContinuousClock()
        var loaded: UNet2DConditionModel?
        let elapsed = try clock.measure { loaded = try QuantizedModelFolder.loadUNet(directory: directory, execution: .cpuDefault) }
        self.directory = directory
        self.model = loaded!
        self.loadSeconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    }

    /// The forward-pass inputs for `options` (sample, context, and SDXL's text embeddings and time ids).
    public func inputs(_ options: Options) -> (sample: Tensor, context: Tensor, textEmbeds: Tensor?, timeIds: Tensor?) {
        let c = model.configuration
        let size = options.latentSize ?? c.sampleSize ?? 64
        let b = options.batch
        let sample = Self.pseudoRandom([b, c.inChannels, size, size], seed: 1)
        let context = Self.pseudoRandom([b, 77, c.crossAttentionDim[0]], seed: 2)
        guard c.usesTextTimeEmbedding, let timeWidth = c.additionTimeEmbedDim,
              let inputWidth = c.projectionClassEmbeddingsInputDim else {
            return (sample, context, nil, nil)
        }
        let textEmbeds = Self.pseudoRandom([b, inputWidth - 6 * timeWidth], seed: 3)
        let pixels = Float(size * 8)
        let timeIds = Tensor(shape: [b, 6], scalars: (0..<b).flatMap { _ in [pixels, pixels, 0, 0, pixels, pixels] })
        return (sample, context, textEmbeds, timeIds)
    }

    /// Times `options.iterations` forward passes after `options.warmup` untimed ones.
    public func run(_ options: Options = Options()) -> Report {
        let (sample, context, textEmbeds, timeIds) = inputs(options)
        let name = "UNet \(directory) batch \(options.batch) latent \(sample.shape[2])x\(sample.shape[3])"
        let result = Benchmark.measure(name, warmup: options.warmup, iterations: options.iterations) {
            _ = model(sample: sample, timestep: options.timestep, encoderHiddenStates: context,
                      textEmbeds: textEmbeds, timeIds: timeIds)
        }
        return Report(directory: directory, batch: options.batch, latentSize: sample.shape[2],
                      threads: CPUConfiguration.threadCount, loadSeconds: loadSeconds, result: result,
                      quantizedExecution: quantizedExecution)
    }

    /// "int8 <kernel>" when the UNet runs real INT8 layers, "fp8 native" for FP8 codes expanded per tile, "simulated"
    /// for other quantized ones, else nil.
    var quantizedExecution: String? {
        let hooks = model.linearLayers.map { $0.executionHook as AnyObject? } + model.convolutionLayers.map { $0.executionHook as AnyObject? }
        if hooks.contains(where: { $0 is CPUInt8LayerHook }) { return "int8 \(CPUInt8Kernel.active.rawValue)" }
        if hooks.contains(where: { $0 is CPUFP8LayerHook }) { return "fp8 native" }
        return hooks.contains(where: { $0 is SimulatedQuantizationHook }) ? "simulated" : nil
    }

    /// Uniform values in [-1, 1) from a 64-bit LCG: cheap, deterministic, platform-independent.
    static func pseudoRandom(_ shape: [Int], seed: UInt64) -> Tensor {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        return Tensor(shape: shape) { p in
            for i in 0..<p.count {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                p[i] = Float(Int32(truncatingIfNeeded: state >> 32)) / 2147483648
            }
        }
    }
}

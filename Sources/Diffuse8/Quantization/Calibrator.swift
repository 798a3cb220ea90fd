#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Settings of one calibration run (`diffuse8 calibrate`).
public struct CalibrationOptions: Sendable {
    /// Real denoising steps T; statistics are kept per step index.
    public var steps: Int
    public var guidanceScale: Float = 7.5
    /// Prompt k (0-based, in the whole file) is generated with seed `seed + k`.
    public var seed: UInt64 = 0
    /// Prompts per calibration batch: a batch's amax is the max over its prompts (as if they ran as one
    /// UNet batch); `sum`/`count` statistics count batches.
    public var batchSize: Int = 1
    public var scheduler: SchedulerKind = .euler
    /// Shard i of n: this run handles the batches g with g % n == i.
    public var shardIndex: Int = 0
    public var shardCount: Int = 1
    /// Rows kept per Linear layer for the SmoothQuant α search (0 = none).
    public var reservoirCapacity: Int = 256

    public init(steps: Int) { self.steps = steps }
}

/// Runs the full-precision pipeline over calibration prompts with every quantizable UNet layer in
/// "observe" mode and returns the statistics (`CalibrationStatistics`). Streaming: each layer input is
/// reduced to a few numbers (and at most `reservoirCapacity` sampled rows) as it passes.
public enum Calibrator {
    /// Reads a prompt file: one prompt per line; blank lines and lines starting with `#` are skipped.
    public static func readPrompts(_ path: String) throws -> [String] {
        guard let data = InputFile.contents(atPath: path) else {
            throw QuantizationError("cannot read prompt file \(path); check the path")
        }
        let prompts = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline)
            .map { line -> String in
                let scalars = line.unicodeScalars.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" || $0 == "\r" }.reversed()
                return String(String.UnicodeScalarView(scalars))
            }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        guard !prompts.isEmpty else {
            throw QuantizationError("prompt file \(path) has no prompts (one per line; blank lines and # comments are ignored)")
        }
        return prompts
    }

    /// FNV-1a 64 of the prompts joined by newlines, as 16 hex digits.
    public static func promptsHash(_ prompts: [String]) -> String {
        ModelFingerprint.hex(ModelFingerprint.fnv1a(Array(prompts.joined(separator: "\n").utf8)))
    }

    /// Calibrates `pipeline`'s UNet on the device it was loaded on (a CUDA pipeline must be loaded for calibration:
    /// `StableDiffusionPipeline(directory:device:precision:forCalibration: true)`). `progress(done, total)` is called
    /// after every prompt.
    public static func calibrate(_ pipeline: StableDiffusionPipeline, prompts: [String], options: CalibrationOptions,
                                 progress: ((Int, Int) -> Void)? = nil) throws -> CalibrationStatistics {
        guard options.steps >= 1 else { throw QuantizationError("--calib-steps must be at least 1") }
        guard options.batchSize >= 1 else { throw QuantizationError("--batch must be at least 1") }
        guard options.shardCount >= 1, (0..<options.shardCount).contains(options.shardIndex) else {
            throw QuantizationError("--shard \(options.shardIndex)/\(options.shardCount) is not a valid shard (use i/n with 0 ≤ i < n)")
        }
        switch pipeline.noisePredictor {
        case let unet as UNet2DConditionModel:
            return try calibrate(pipeline, unet: unet, base: CPUBackend.shared, prompts: prompts, options: options, progress: progress)
        case let cuda as CUDANoisePredictor:
            guard !cuda.unet.backend.fusesLayers else {
                throw QuantizationError("this CUDA pipeline fuses layers; load it with forCalibration: true to calibrate")
            }
            return try calibrate(pipeline, unet: cuda.unet.model, base: cuda.unet.backend, prompts: prompts, options: options, progress: progress)
        default:
            throw QuantizationError("calibration runs on the CPU or CUDA pipelines")
        }
    }

    /// The calibration loop with the UNet running on `base`, every quantizable layer observed through a
    /// `RecordingBackend`.
    static func calibrate<B: ModelBackend>(_ pipeline: StableDiffusionPipeline, unet: UNet2DConditionModel, base: B, prompts: [String],
                                           options: CalibrationOptions, progress: ((Int, Int) -> Void)?) throws -> CalibrationStatistics {
        let recorder = CalibrationRecorder(unet: unet, steps: options.steps, reservoirCapacity: options.reservoirCapacity)
        let original = pipeline.noisePredictor
        pipeline.noisePredictor = BackendNoisePredictor(unet, backend: RecordingBackend(base, recorder: recorder))
        defer { pipeline.noisePredictor = original }

        let batches = stride(from: 0, to: prompts.count, by: options.batchSize).map { $0..<min($0 + options.batchSize, prompts.count) }
        let mine = batches.indices.filter { $0 % options.shardCount == options.shardIndex }
        let total = mine.map { batches[$0].count }.reduce(0, +)
        var done = 0
        for g in mine {
            for k in batches[g] {
                recorder.promptIndex = k
                recorder.step = 0
                let request = GenerationRequest(prompt: prompts[k], steps: options.steps, guidanceScale: options.guidanceScale,
                                                seed: options.seed &+ UInt64(k), scheduler: options.scheduler)
                _ = try pipeline.generate(request) { recorder.step = $0.step }
                done += 1
                progress?(done, total)
            }
            recorder.finishBatch()
        }
        let provenance = CalibrationStatistics.Provenance(
            modelFingerprint: ModelFingerprint.of(unet), steps: options.steps, promptsHash: promptsHash(prompts),
            promptCount: prompts.count, guidanceScale: options.guidanceScale, seed: options.seed,
            batchSize: options.batchSize, scheduler: options.scheduler.rawValue,
            reservoirCapacity: options.reservoirCapacity, shardCount: options.shardCount, shards: [options.shardIndex])
        var layers = recorder.statistics
        for i in layers.indices { layers[i].reservoir?.sort() }
        return CalibrationStatistics(provenance: provenance, layers: layers)
    }
}

/// The quantizable layers of a UNet in the order statistics list them: every Conv2d, then every Linear.
public struct UNetLayerInventory {
    public let convolutions: [Conv2d]
    public let linears: [Linear]

    public init(_ unet: UNet2DConditionModel) {
        convolutions = unet.convolutionLayers
        linears = unet.linearLayers
    }

    public var names: [String] { convolutions.map(\.name) + linears.map(\.name) }

    /// Whether the layer's output feeds attention scores or values (`to_q`, `to_k`, `to_v`).
    public static func isAttentionProjection(_ name: String) -> Bool {
        name.hasSuffix(".to_q") || name.hasSuffix(".to_k") || name.hasSuffix(".to_v")
    }
}

/// Observe mode: collects per-step input amax (and Linear per-channel amax, sampled rows, Q/K/V output amax) of the
/// layers a `RecordingBackend` hands it, and per attention module the max of its softmax probabilities.
package final class CalibrationRecorder {
    let inventory: UNetLayerInventory
    package var statistics: [LayerStatistics]
    /// Current denoising step index and global prompt index (set by the calibration loop).
    package var step = 0
    var promptIndex = 0
    /// Per layer, per step: the running amax of the current batch (-1 = not seen in this batch).
    private var batchAmax: [[Float]]
    private let layerKeys: [UInt64]
    /// Each observed layer's position in `statistics`.
    private let indices: [ObjectIdentifier: Int]
    /// The `to_q` seen last and not yet followed by its attention: the module the next attention belongs to (the
    /// model computes an attention's Q, K, V right before it, and the recording backend fuses nothing).
    private var pendingQuery: Int?

    package init(unet: UNet2DConditionModel, steps: Int, reservoirCapacity: Int) {
        inventory = UNetLayerInventory(unet)
        statistics = inventory.convolutions.map {
            LayerStatistics(name: $0.name, kind: .conv2d, steps: steps, channels: nil, recordsOutput: false, reservoirCapacity: 0)
        } + inventory.linears.map {
            var s = LayerStatistics(name: $0.name, kind: .linear, steps: steps, channels: $0.inFeatures,
                                    recordsOutput: UNetLayerInventory.isAttentionProjection($0.name), reservoirCapacity: reservoirCapacity)
            if $0.name.hasSuffix(".to_q") { s.probabilityAmax = Array(repeating: 0, count: steps) }
            return s
        }
        batchAmax = Array(repeating: Array(repeating: -1, count: steps), count: statistics.count)
        layerKeys = inventory.names.map { ModelFingerprint.fnv1a(Array($0.utf8)) }
        let layers: [AnyObject] = inventory.convolutions + inventory.linears
        indices = Dictionary(uniqueKeysWithValues: layers.enumerated().map { (ObjectIdentifier($0.element), $0.offset) })
    }

    /// Moves the current batch's per-step amax into the statistics.
    package func finishBatch() {
        for l in batchAmax.indices {
            for t in batchAmax[l].indices where batchAmax[l][t] >= 0 {
                statistics[l].addBatch(step: t, amax: batchAmax[l][t])
                batchAmax[l][t] = -1
            }
        }
    }

    /// Records a Conv2d input: its amax for the current step.
    func observe<B: ModelBackend>(_ layer: Conv2d, input x: B.Value, on b: B) throws {
        guard let index = indices[ObjectIdentifier(layer)], step < batchAmax[index].count else { return }
        batchAmax[index][step] = max(batchAmax[index][step], try b.absMax(x))
    }

    /// Records a Linear input (amax, per-channel amax, sampled rows) and, for Q/K/V, its output amax.
    func observe<B: ModelBackend>(_ layer: Linear, input x: B.Value, output: B.Value?, on b: B) throws {
        guard let index = indices[ObjectIdentifier(layer)], step < batchAmax[index].count else { return }
        let channels = try b.columnAbsMax(x)
        if var channelAmax = statistics[index].channelAmax, channelAmax.count == channels.count {
            for j in channels.indices where channels[j] > channelAmax[j] { channelAmax[j] = channels[j] }
            statistics[index].channelAmax = channelAmax
        }
        batchAmax[index][step] = max(batchAmax[index][step], channels.max() ?? 0)
        if var reservoir = statistics[index].reservoir {
            // The reservoir keeps the smallest keys; only rows that survive this call need their values.
            let shape = b.shape(of: x), width = shape.last ?? 1
            let rowCount = shape.reduce(1, *) / max(width, 1)
            let keys = (0..<rowCount).map { RowReservoir.key(layer: layerKeys[index], prompt: promptIndex, step: step, row: $0) }
            let kept = reservoir.survivors(of: keys)
            for (r, values) in zip(kept, try b.rows(x, kept)) { reservoir.offer(key: keys[r], row: values) }
            statistics[index].reservoir = reservoir
        }
        if let output {
            let amax = try b.absMax(output)
            if let previous = statistics[index].outputAmax?[step] { statistics[index].outputAmax?[step] = max(previous, amax) }
        }
        if statistics[index].probabilityAmax != nil { pendingQuery = index }
    }

    /// Records the max softmax probability of the attention that follows a `to_q` (the UNet's; the text encoder's
    /// causal attention has no `to_q` layer here and is skipped). A backend that does not compute it leaves the
    /// statistics without the value (FP8 attention then rounds with amax 1).
    func observeAttention<B: ModelBackend>(query: Columns<B.Value>, key: Columns<B.Value>, heads: Int, on b: B) throws {
        guard let index = pendingQuery else { return }
        pendingQuery = nil
        guard step < (statistics[index].probabilityAmax?.count ?? 0) else { return }
        guard let p = try b.attentionProbabilityMax(query: query, key: key, heads: heads) else {
            statistics[index].probabilityAmax = nil
            return
        }
        statistics[index].probabilityAmax![step] = max(statistics[index].probabilityAmax![step], p)
    }
}

/// A short identity of a UNet: FNV-1a over its configuration-relevant structure (layer names and
/// shapes) and a strided sample of 64 weight values per quantizable layer. Statistics and quantized
/// models record it, so statistics from another model are refused.
public enum ModelFingerprint {
    public static func of(_ unet: UNet2DConditionModel) -> String {
        var bytes: [UInt8] = []
        func add(_ name: String, _ w: Tensor) {
            bytes += Array(name.utf8) + Array(w.shape.map(String.init).joined(separator: "x").utf8)
            let stride = max(1, w.count / 64)
            for i in Swift.stride(from: 0, to: w.count, by: stride) {
                withUnsafeBytes(of: w.scalars[i].bitPattern.littleEndian) { bytes += $0 }
            }
        }
        for c in unet.convolutionLayers { add(c.name, c.weight) }
        for l in unet.linearLayers { add(l.name, l.weight) }
        return hex(fnv1a(bytes))
    }

    static func fnv1a(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xcbf29ce484222325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        return h
    }

    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}

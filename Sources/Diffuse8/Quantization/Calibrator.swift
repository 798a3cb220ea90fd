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
        guard let data = FileManager.default.contents(atPath: path) else {
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

    /// Calibrates `pipeline`'s UNet. `progress(done, total)` is called after every prompt.
    public static func calibrate(_ pipeline: StableDiffusionPipeline, prompts: [String], options: CalibrationOptions,
                                 progress: ((Int, Int) -> Void)? = nil) throws -> CalibrationStatistics {
        guard options.steps >= 1 else { throw QuantizationError("--calib-steps must be at least 1") }
        guard options.batchSize >= 1 else { throw QuantizationError("--batch must be at least 1") }
        guard options.shardCount >= 1, (0..<options.shardCount).contains(options.shardIndex) else {
            throw QuantizationError("--shard \(options.shardIndex)/\(options.shardCount) is not a valid shard (use i/n with 0 ≤ i < n)")
        }
        let unet = try pipeline.cpuUNet()
        let recorder = CalibrationRecorder(unet: unet, steps: options.steps, reservoirCapacity: options.reservoirCapacity)
        recorder.install()
        defer { recorder.uninstall() }

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

/// Observe mode: collects per-step input amax (and Linear per-channel amax, sampled rows, Q/K/V output amax).
final class CalibrationRecorder {
    let inventory: UNetLayerInventory
    var statistics: [LayerStatistics]
    /// Current denoising step index and global prompt index (set by the calibration loop).
    var step = 0
    var promptIndex = 0
    /// Per layer, per step: the running amax of the current batch (-1 = not seen in this batch).
    private var batchAmax: [[Float]]
    private let layerKeys: [UInt64]

    init(unet: UNet2DConditionModel, steps: Int, reservoirCapacity: Int) {
        inventory = UNetLayerInventory(unet)
        statistics = inventory.convolutions.map {
            LayerStatistics(name: $0.name, kind: .conv2d, steps: steps, channels: nil, recordsOutput: false, reservoirCapacity: 0)
        } + inventory.linears.map {
            LayerStatistics(name: $0.name, kind: .linear, steps: steps, channels: $0.inFeatures,
                            recordsOutput: UNetLayerInventory.isAttentionProjection($0.name), reservoirCapacity: reservoirCapacity)
        }
        batchAmax = Array(repeating: Array(repeating: -1, count: steps), count: statistics.count)
        layerKeys = inventory.names.map { ModelFingerprint.fnv1a(Array($0.utf8)) }
    }

    func install() {
        for (i, conv) in inventory.convolutions.enumerated() { conv.executionHook = ObservingHook(recorder: self, index: i) }
        let offset = inventory.convolutions.count
        for (i, linear) in inventory.linears.enumerated() { linear.executionHook = ObservingHook(recorder: self, index: offset + i) }
    }

    func uninstall() {
        for conv in inventory.convolutions { conv.executionHook = nil }
        for linear in inventory.linears { linear.executionHook = nil }
    }

    /// Moves the current batch's per-step amax into the statistics.
    func finishBatch() {
        for l in batchAmax.indices {
            for t in batchAmax[l].indices where batchAmax[l][t] >= 0 {
                statistics[l].addBatch(step: t, amax: batchAmax[l][t])
                batchAmax[l][t] = -1
            }
        }
    }

    func observeConv(_ index: Int, _ x: Tensor) {
        guard step < batchAmax[index].count else { return }
        let amax = x.scalars.withUnsafeBufferPointer { Self.absMax($0) }
        batchAmax[index][step] = max(batchAmax[index][step], amax)
    }

    func observeLinear(_ index: Int, _ x: Tensor, output: Tensor?) {
        guard step < batchAmax[index].count else { return }
        let width = x.shape.last!, rows = x.count / width
        var amax: Float = 0
        x.scalars.withUnsafeBufferPointer { p in
            statistics[index].channelAmax!.withUnsafeMutableBufferPointer { c in
                for r in 0..<rows {
                    for j in 0..<width {
                        let v = abs(p[r * width + j])
                        if v > c[j] { c[j] = v }
                        if v > amax { amax = v }
                    }
                }
            }
            if statistics[index].reservoir != nil {
                for r in 0..<rows {
                    let key = RowReservoir.key(layer: layerKeys[index], prompt: promptIndex, step: step, row: r)
                    if statistics[index].reservoir!.accepts(key) {
                        statistics[index].reservoir!.offer(key: key, row: UnsafeBufferPointer(rebasing: p[(r * width)..<((r + 1) * width)]))
                    }
                }
            }
        }
        batchAmax[index][step] = max(batchAmax[index][step], amax)
        if let output {
            let o = output.scalars.withUnsafeBufferPointer { Self.absMax($0) }
            statistics[index].outputAmax![step] = max(statistics[index].outputAmax![step], o)
        }
    }

    static func absMax(_ p: UnsafeBufferPointer<Float>) -> Float {
        var m: Float = 0
        for v in p { m = max(m, abs(v)) }
        return m
    }
}

/// The hook installed on each layer during calibration: records, then computes in full precision.
final class ObservingHook: LinearExecutionHook, Conv2dExecutionHook {
    unowned let recorder: CalibrationRecorder
    let index: Int

    init(recorder: CalibrationRecorder, index: Int) {
        self.recorder = recorder
        self.index = index
    }

    func run(_ layer: Linear, _ x: Tensor) -> Tensor {
        let y = layer.fullPrecision(x)
        recorder.observeLinear(index, x, output: UNetLayerInventory.isAttentionProjection(layer.name) ? y : nil)
        return y
    }

    func run(_ layer: Conv2d, _ x: Tensor) -> Tensor {
        recorder.observeConv(index, x)
        return layer.fullPrecision(x)
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

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Activation statistics of one quantizable layer's input, per denoising step index.
///
/// A "batch" is one calibration batch (`--batch` prompts, each with both CFG halves). Per step t:
/// `amaxSum[t]` = Σ over batches of that batch's input amax, `amaxMax/Min[t]` = max/min over batches,
/// `batchCount[t]` = number of batches. Sums are kept in Double: amax values are Float32, so the sum is
/// exact (hence merging shards gives bit-identical results) as long as the values of one step span
/// less than ~2^20 in magnitude over fewer than 2^9 batches — always the case in practice.
public struct LayerStatistics: Sendable, Equatable {
    public enum Kind: String, Sendable, Codable { case linear, conv2d }

    public let name: String
    public let kind: Kind
    public var amaxSum: [Double]
    public var amaxMax: [Float]
    public var amaxMin: [Float]
    public var batchCount: [Double]
    /// Linear only: max |x_j| per input channel over everything (SmoothQuant's max|X_j|).
    public var channelAmax: [Float]?
    /// `to_q`/`to_k`/`to_v` only: per step, max |output| over batches (FP8 attention's Q/K/V amax).
    public var outputAmax: [Float]?
    /// `to_q` only: per step, the max over batches of its attention module's softmax probabilities (FP8
    /// attention's probability amax, in [0, 1]); nil in statistics recorded before it.
    public var probabilityAmax: [Float]?
    /// Linear only: a uniform sample of input rows (bottom-k by a deterministic key; see `RowReservoir`).
    public var reservoir: RowReservoir?

    public init(name: String, kind: Kind, steps: Int, channels: Int?, recordsOutput: Bool, reservoirCapacity: Int) {
        self.name = name
        self.kind = kind
        amaxSum = Array(repeating: 0, count: steps)
        amaxMax = Array(repeating: 0, count: steps)
        amaxMin = Array(repeating: .infinity, count: steps)
        batchCount = Array(repeating: 0, count: steps)
        channelAmax = channels.map { Array(repeating: 0, count: $0) }
        outputAmax = recordsOutput ? Array(repeating: 0, count: steps) : nil
        reservoir = (channels != nil && reservoirCapacity > 0) ? RowReservoir(capacity: reservoirCapacity, width: channels!) : nil
    }

    /// Adds one batch's amax for step `t`.
    mutating func addBatch(step t: Int, amax: Float) {
        amaxSum[t] += Double(amax)
        amaxMax[t] = max(amaxMax[t], amax)
        amaxMin[t] = min(amaxMin[t], amax)
        batchCount[t] += 1
    }

    /// Merges another shard's statistics of the same layer (exact: sums, max, min, counts, reservoir).
    mutating func merge(_ other: LayerStatistics) {
        for t in amaxSum.indices {
            amaxSum[t] += other.amaxSum[t]
            amaxMax[t] = max(amaxMax[t], other.amaxMax[t])
            amaxMin[t] = min(amaxMin[t], other.amaxMin[t])
            batchCount[t] += other.batchCount[t]
        }
        if let o = other.channelAmax, let c = channelAmax { channelAmax = zip(c, o).map { max($0, $1) } }
        if let o = other.outputAmax, let c = outputAmax { outputAmax = zip(c, o).map { max($0, $1) } }
        // A shard without the field (older version) cannot say what its prompts reached: the merge has none either.
        probabilityAmax = zip(probabilityAmax ?? [], other.probabilityAmax ?? []).map { max($0, $1) }
        if probabilityAmax?.isEmpty ?? true { probabilityAmax = nil }
        if let o = other.reservoir { reservoir?.merge(o) }
    }
}

/// A bounded uniform sample of rows: each row gets a pseudo-random 64-bit key computed from where it came
/// from (layer, global prompt index, step, row) and the `capacity` smallest keys are kept ("bottom-k"
/// sampling). The sample does not depend on the order rows arrive in, so shards merge exactly.
public struct RowReservoir: Sendable, Equatable {
    public let capacity: Int
    public let width: Int
    public private(set) var keys: [UInt64] = []
    public private(set) var rows: [Float] = []
    /// Index of the largest kept key (the one a new smaller key replaces).
    private var largest = 0

    public init(capacity: Int, width: Int) {
        self.capacity = capacity
        self.width = width
    }

    public init(capacity: Int, width: Int, keys: [UInt64], rows: [Float]) {
        self.init(capacity: capacity, width: width)
        for (i, key) in keys.enumerated() { offer(key: key, row: rows[(i * width)..<((i + 1) * width)]) }
        sort()
    }

    public var count: Int { keys.count }

    /// The key above which rows are rejected right away.
    @inline(__always)
    func accepts(_ key: UInt64) -> Bool { keys.count < capacity || key < keys[largest] }

    mutating func offer<C: Collection>(key: UInt64, row: C) where C.Element == Float {
        guard accepts(key) else { return }
        if keys.count < capacity {
            keys.append(key)
            rows.append(contentsOf: row)
            if key > keys[largest] || keys.count == 1 { largest = keys.count - 1 }
        } else {
            keys[largest] = key
            var i = largest * width
            for v in row { rows[i] = v; i += 1 }
            largest = keys.indices.max { keys[$0] < keys[$1] }!
        }
    }

    /// The positions in `candidates` whose rows this reservoir keeps after offering all of them (bottom-k of its
    /// keys and the candidates'), so that only those rows need their values.
    func survivors(of candidates: [UInt64]) -> [Int] {
        let order = candidates.indices.sorted { candidates[$0] < candidates[$1] }
        let existing = keys.sorted()
        var e = 0, taken = 0, kept: [Int] = []
        for i in order {
            while e < existing.count, existing[e] < candidates[i], taken < capacity { e += 1; taken += 1 }
            guard taken < capacity else { break }
            kept.append(i)
            taken += 1
        }
        return kept.sorted()
    }

    /// Puts rows in ascending key order (the canonical order files store).
    package mutating func sort() {
        let order = keys.indices.sorted { keys[$0] < keys[$1] }
        keys = order.map { keys[$0] }
        rows = order.flatMap { rows[($0 * width)..<(($0 + 1) * width)] }
        largest = max(0, keys.count - 1)
    }

    mutating func merge(_ other: RowReservoir) {
        for (i, key) in other.keys.enumerated() { offer(key: key, row: other.rows[(i * width)..<((i + 1) * width)]) }
        sort()
    }

    /// The kept rows as a [count, width] tensor.
    public var tensor: Tensor { Tensor(shape: [keys.count, width], scalars: rows) }

    /// SplitMix64 of the row's origin: the same row gets the same key in any shard.
    @inline(__always)
    static func key(layer: UInt64, prompt: Int, step: Int, row: Int) -> UInt64 {
        var z = layer &+ UInt64(prompt) &* 0x9E3779B97F4A7C15 &+ UInt64(step) &* 0xC2B2AE3D27D4EB4F &+ UInt64(row) &* 0x165667B19E3779F9
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}

/// Everything calibration learned about a model: per-layer, per-step activation statistics plus what
/// they were computed from. Stored as a `.d8s` file (safetensors + JSON metadata, see `CalibrationStatisticsFile`).
public struct CalibrationStatistics: Sendable, Equatable {
    /// What the statistics were computed from; statistics only merge or apply when these agree.
    public struct Provenance: Sendable, Equatable, Codable {
        /// `ModelFingerprint` of the UNet (config + weights sample).
        public var modelFingerprint: String
        /// Denoising steps T (statistics are per step index 0..<T).
        public var steps: Int
        /// FNV-1a hash of the full calibration prompt list (all shards).
        public var promptsHash: String
        /// Number of prompts in the full list.
        public var promptCount: Int
        public var guidanceScale: Float
        public var seed: UInt64
        public var batchSize: Int
        public var scheduler: String
        public var reservoirCapacity: Int
        /// Shard count n and the shard indices these statistics cover (all 0..<n once complete).
        public var shardCount: Int
        public var shards: [Int]

        package init(modelFingerprint: String, steps: Int, promptsHash: String, promptCount: Int, guidanceScale: Float, seed: UInt64,
                     batchSize: Int, scheduler: String, reservoirCapacity: Int, shardCount: Int, shards: [Int]) {
            self.modelFingerprint = modelFingerprint
            self.steps = steps
            self.promptsHash = promptsHash
            self.promptCount = promptCount
            self.guidanceScale = guidanceScale
            self.seed = seed
            self.batchSize = batchSize
            self.scheduler = scheduler
            self.reservoirCapacity = reservoirCapacity
            self.shardCount = shardCount
            self.shards = shards
        }
    }

    public var provenance: Provenance
    /// Layers in UNet execution order (Conv2d and Linear interleaved as `UNetLayerInventory` lists them).
    public var layers: [LayerStatistics]

    public init(provenance: Provenance, layers: [LayerStatistics]) {
        self.provenance = provenance
        self.layers = layers
    }

    public func layer(named name: String) -> LayerStatistics? { layers.first { $0.name == name } }

    /// Whether every shard of the prompt list is included.
    public var isComplete: Bool { Set(provenance.shards) == Set(0..<provenance.shardCount) }

    /// Merges shards of one calibration. Throws when they come from different models, step counts,
    /// prompt lists or settings, or when a shard appears twice. The result equals a one-shard run
    /// over the same prompts (same statistics; shards listed).
    public static func merge(_ parts: [CalibrationStatistics], names: [String]? = nil) throws -> CalibrationStatistics {
        guard var result = parts.first else { throw QuantizationError("merge-stats: give at least one statistics file") }
        let label = { (i: Int) in names?[i] ?? "input \(i + 1)" }
        for (i, part) in parts.enumerated().dropFirst() {
            var a = result.provenance, b = part.provenance
            if a.modelFingerprint != b.modelFingerprint {
                throw QuantizationError("\(label(i)) was calibrated on another model (fingerprint \(b.modelFingerprint), expected \(a.modelFingerprint)); calibrate every shard with the same --model")
            }
            if a.steps != b.steps {
                throw QuantizationError("\(label(i)) has \(b.steps) calibration steps, expected \(a.steps); every shard needs the same --calib-steps")
            }
            if a.promptsHash != b.promptsHash || a.shardCount != b.shardCount {
                throw QuantizationError("\(label(i)) comes from another prompt file or shard count (prompts \(b.promptsHash), \(b.shardCount) shards; expected \(a.promptsHash), \(a.shardCount)); shard one prompt file with the same --shard i/n")
            }
            a.shards = []; b.shards = []
            if a != b {
                throw QuantizationError("\(label(i)) was calibrated with other settings (cfg, seed, batch, scheduler or reservoir size) than the first input; recalibrate it with the same options")
            }
            let overlap = Set(result.provenance.shards).intersection(part.provenance.shards)
            guard overlap.isEmpty else {
                throw QuantizationError("\(label(i)) repeats shard(s) \(overlap.sorted().map { "\($0)/\(a.shardCount)" }.joined(separator: ", ")); each shard may be merged once")
            }
            guard part.layers.map(\.name) == result.layers.map(\.name) else {
                throw QuantizationError("\(label(i)) lists other layers than the first input; was it made by another version?")
            }
            for l in result.layers.indices { result.layers[l].merge(part.layers[l]) }
            result.provenance.shards = (result.provenance.shards + part.provenance.shards).sorted()
        }
        return result
    }
}

/// An error of the quantization toolkit; the message says what is wrong and what to do.
public struct QuantizationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

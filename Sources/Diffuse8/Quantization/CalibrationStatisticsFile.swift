#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Reads and writes calibration statistics (`.d8s`): a safetensors file whose `__metadata__` holds
/// `format` = "diffuse8-calibration-statistics", `version`, `provenance` (JSON: model fingerprint, T,
/// prompts hash, shards, settings) and `layers` (JSON list of {name, kind}); per layer `i` (execution
/// order) the tensors `L<i>.amax_sum` (F64 [T]), `L<i>.amax_max`, `L<i>.amax_min` (F32 [T]),
/// `L<i>.batch_count` (F64 [T]), and when recorded `L<i>.channel_amax` (F32 [C]), `L<i>.output_amax`
/// (F32 [T]), `L<i>.probability_amax` (F32 [T], `to_q` layers: max softmax probability of the attention module,
/// in [0, 1]; absent in files written before it), `L<i>.reservoir_keys` (U64 [k]), `L<i>.reservoir_rows` (F32 [k, C]).
///
/// Written atomically (temporary file + rename): an interrupted calibration leaves no file behind.
public enum CalibrationStatisticsFile {
    public static let formatName = "diffuse8-calibration-statistics"
    public static let version = "1"

    struct LayerEntry: Codable { var name: String; var kind: LayerStatistics.Kind }

    public static func write(_ statistics: CalibrationStatistics, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let provenance = String(decoding: try encoder.encode(statistics.provenance), as: UTF8.self)
        let layers = String(decoding: try encoder.encode(statistics.layers.map { LayerEntry(name: $0.name, kind: $0.kind) }), as: UTF8.self)
        var writer = SafetensorsWriter(metadata: ["format": formatName, "version": version,
                                                  "provenance": provenance, "layers": layers])
        for (i, layer) in statistics.layers.enumerated() {
            let p = "L\(i)."
            let steps = layer.amaxSum.count
            try writer.add(p + "amax_sum", dtype: .f64, shape: [steps], bytes: bytes(layer.amaxSum))
            try writer.add(p + "amax_max", dtype: .f32, shape: [steps], bytes: bytes(layer.amaxMax))
            try writer.add(p + "amax_min", dtype: .f32, shape: [steps], bytes: bytes(layer.amaxMin))
            try writer.add(p + "batch_count", dtype: .f64, shape: [steps], bytes: bytes(layer.batchCount))
            if let c = layer.channelAmax { try writer.add(p + "channel_amax", dtype: .f32, shape: [c.count], bytes: bytes(c)) }
            if let o = layer.outputAmax { try writer.add(p + "output_amax", dtype: .f32, shape: [o.count], bytes: bytes(o)) }
            if let a = layer.probabilityAmax { try writer.add(p + "probability_amax", dtype: .f32, shape: [a.count], bytes: bytes(a)) }
            if let r = layer.reservoir {
                try writer.add(p + "reservoir_keys", dtype: .u64, shape: [r.count], bytes: bytes(r.keys))
                try writer.add(p + "reservoir_rows", dtype: .f32, shape: [r.count, r.width], bytes: bytes(r.rows))
            }
        }
        try writer.write(to: path)
    }

    public static func read(_ path: String) throws -> CalibrationStatistics {
        let file = try SafetensorsFile(path: path)
        guard file.metadata["format"] == formatName else {
            throw QuantizationError("\(path) is not a Diffuse8 calibration statistics file (no \"format\": \"\(formatName)\" in its metadata); make one with `diffuse8 calibrate`")
        }
        guard file.metadata["version"] == version else {
            throw QuantizationError("\(path): statistics format version \(file.metadata["version"] ?? "?") is not supported (expected \(version)); recalibrate")
        }
        let decoder = JSONDecoder()
        guard let p = file.metadata["provenance"], let l = file.metadata["layers"],
              let provenance = try? decoder.decode(CalibrationStatistics.Provenance.self, from: Data(p.utf8)),
              let entries = try? decoder.decode([LayerEntry].self, from: Data(l.utf8)) else {
            throw QuantizationError("\(path): the provenance or layer list in the metadata is missing or malformed; recalibrate")
        }
        try validate(provenance, path: path)
        var layers: [LayerStatistics] = []
        for (i, entry) in entries.enumerated() {
            let p = "L\(i)."
            func values<T>(_ name: String, _ type: T.Type) throws -> [T]? {
                guard file.entries[p + name] != nil else { return nil }
                let raw = try file.rawBytes(named: p + name)
                guard raw.count % MemoryLayout<T>.size == 0 else {
                    throw QuantizationError("\(path): tensor \(p + name) has a bad size")
                }
                let size = MemoryLayout<T>.size
                return (0..<(raw.count / size)).map { raw.loadUnaligned(fromByteOffset: $0 * size, as: T.self) }
            }
            guard let sum = try values("amax_sum", Double.self), let mx = try values("amax_max", Float.self),
                  let mn = try values("amax_min", Float.self), let count = try values("batch_count", Double.self),
                  [mx.count, mn.count, count.count] == [sum.count, sum.count, sum.count], sum.count == provenance.steps else {
                throw QuantizationError("\(path): statistics of layer \(entry.name) (\(p)*) are missing or have the wrong length; the file is damaged, recalibrate")
            }
            let channels = try values("channel_amax", Float.self)
            var layer = LayerStatistics(name: entry.name, kind: entry.kind, steps: sum.count, channels: nil,
                                        recordsOutput: false, reservoirCapacity: 0)
            layer.amaxSum = sum; layer.amaxMax = mx; layer.amaxMin = mn; layer.batchCount = count
            layer.channelAmax = channels
            layer.outputAmax = try values("output_amax", Float.self)
            layer.probabilityAmax = try values("probability_amax", Float.self)
            let keys = try values("reservoir_keys", UInt64.self), rows = try values("reservoir_rows", Float.self)
            if keys != nil || rows != nil {
                guard let keys, let rows, let width = channels?.count, width > 0, rows.count == keys.count * width,
                      keys.count <= provenance.reservoirCapacity else {
                    throw QuantizationError("\(path): the sampled rows of layer \(entry.name) (\(p)reservoir_keys, \(p)reservoir_rows) do not match each other, \(p)channel_amax or the reservoir size; the file is damaged, recalibrate")
                }
                guard rows.allSatisfy(\.isFinite) else {
                    throw QuantizationError("\(path): \(p)reservoir_rows of layer \(entry.name) holds non-finite values; recalibrate")
                }
                layer.reservoir = RowReservoir(capacity: provenance.reservoirCapacity, width: width, keys: keys, rows: rows)
            }
            try validate(layer, prefix: p, path: path, steps: provenance.steps)
            layers.append(layer)
        }
        guard Set(layers.map(\.name)).count == layers.count else {
            throw QuantizationError("\(path): the layer list names a layer twice; the file is damaged, recalibrate")
        }
        return CalibrationStatistics(provenance: provenance, layers: layers)
    }

    /// Limits on the provenance numbers (they size loops and allocations when statistics are merged or applied).
    static func validate(_ p: CalibrationStatistics.Provenance, path: String) throws {
        func fail(_ key: String, _ rule: String) -> QuantizationError {
            QuantizationError("\(path): provenance `\(key)` \(rule); the file is damaged, recalibrate")
        }
        guard (1...ModelLimits.maximumSteps).contains(p.steps) else { throw fail("steps", "= \(p.steps) is outside 1...\(ModelLimits.maximumSteps)") }
        guard (1...1_000_000).contains(p.shardCount) else { throw fail("shardCount", "= \(p.shardCount) is outside 1...1000000") }
        guard p.shards.allSatisfy({ (0..<p.shardCount).contains($0) }), Set(p.shards).count == p.shards.count else {
            throw fail("shards", "= \(p.shards.prefix(8)) must be distinct indices in 0..<\(p.shardCount)")
        }
        guard p.promptCount >= 1 else { throw fail("promptCount", "= \(p.promptCount) must be at least 1") }
        guard p.batchSize >= 1 else { throw fail("batchSize", "= \(p.batchSize) must be at least 1") }
        guard (0...(1 << 20)).contains(p.reservoirCapacity) else { throw fail("reservoirCapacity", "= \(p.reservoirCapacity) is outside 0...\(1 << 20)") }
        guard p.guidanceScale.isFinite else { throw fail("guidanceScale", "is not a finite number") }
    }

    /// Per step: a whole, non-negative batch count, the same at every step (each prompt runs all T steps); with
    /// batches, finite non-negative amax values with min ≤ max; without, zero sums. Per-channel and output amax
    /// finite and non-negative, of the right length.
    static func validate(_ layer: LayerStatistics, prefix p: String, path: String, steps: Int) throws {
        func fail(_ tensor: String, _ rule: String) -> QuantizationError {
            QuantizationError("\(path): tensor \(p)\(tensor) (layer \(layer.name)) \(rule); the file is damaged, recalibrate")
        }
        let counts = layer.batchCount
        guard let first = counts.first, first.isFinite, first >= 0, first == first.rounded(), counts.allSatisfy({ $0 == first }) else {
            throw fail("batch_count", "must be one whole number ≥ 0 repeated for every step, got \(counts.prefix(4))")
        }
        for t in 0..<steps {
            let (sum, high, low) = (layer.amaxSum[t], layer.amaxMax[t], layer.amaxMin[t])
            if first > 0 {
                guard sum.isFinite, sum >= 0, high.isFinite, high >= 0, low.isFinite, low >= 0, low <= high else {
                    throw fail("amax_*", "at step \(t) holds sum \(sum), max \(high), min \(low); amax values must be finite, ≥ 0 and min ≤ max")
                }
            } else {
                guard sum == 0, high == 0, !low.isNaN else {
                    throw fail("amax_*", "at step \(t) holds values although batch_count is 0")
                }
            }
        }
        if let c = layer.channelAmax, let bad = c.first(where: { !($0.isFinite && $0 >= 0) }) {
            throw fail("channel_amax", "holds \(bad); amax values must be finite and ≥ 0")
        }
        if let o = layer.outputAmax {
            guard o.count == steps else { throw fail("output_amax", "has \(o.count) values for \(steps) steps") }
            if let bad = o.first(where: { !($0.isFinite && $0 >= 0) }) {
                throw fail("output_amax", "holds \(bad); amax values must be finite and ≥ 0")
            }
        }
        if let a = layer.probabilityAmax {
            guard a.count == steps else { throw fail("probability_amax", "has \(a.count) values for \(steps) steps") }
            if let bad = a.first(where: { !($0 >= 0 && $0 <= 1) }) {
                throw fail("probability_amax", "holds \(bad); softmax probabilities lie in [0, 1]")
            }
        }
    }

    static func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
}

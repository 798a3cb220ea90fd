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
/// (F32 [T]), `L<i>.reservoir_keys` (U64 [k]), `L<i>.reservoir_rows` (F32 [k, C]).
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
            if let keys = try values("reservoir_keys", UInt64.self), let rows = try values("reservoir_rows", Float.self),
               let width = channels?.count, rows.count == keys.count * width {
                layer.reservoir = RowReservoir(capacity: provenance.reservoirCapacity, width: width, keys: keys, rows: rows)
            }
            layers.append(layer)
        }
        return CalibrationStatistics(provenance: provenance, layers: layers)
    }

    static func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
}

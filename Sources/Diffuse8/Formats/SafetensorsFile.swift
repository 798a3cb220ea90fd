#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Errors raised while reading or writing safetensors files. Each names the file and, where it
/// applies, the tensor.
public struct SafetensorsError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A `.safetensors` file (8-byte little-endian header length, JSON header, raw data).
///
/// Simple first version: reads the whole file. (To be replaced by the memory-mapped, validating reader.)
public final class SafetensorsFile: TensorStore {
    public struct Entry: Sendable {
        public let dtype: String
        public let shape: [Int]
        public let offsets: (Int, Int)
    }

    public let path: String
    public let entries: [String: Entry]
    public let metadata: [String: String]
    private let data: Data
    private let dataStart: Int

    public init(path: String) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SafetensorsError("\(path): cannot read the file")
        }
        self.data = data
        guard data.count >= 8 else { throw SafetensorsError("\(path): file is \(data.count) bytes, too short for a safetensors header") }
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | (Int($1.element) << (8 * $1.offset)) }
        guard headerLength <= data.count - 8 else { throw SafetensorsError("\(path): header length \(headerLength) runs past the end of the file") }
        let header = try JSONDecoder().decode([String: JSONValue].self, from: data.subdata(in: 8..<(8 + headerLength)))
        dataStart = 8 + headerLength
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                for (k, v) in value.object ?? [:] { metadata[k] = v.string }
                continue
            }
            guard let dtype = value["dtype"]?.string, let shape = value["shape"]?.array?.compactMap(\.int),
                  let offsets = value["data_offsets"]?.array?.compactMap(\.int), offsets.count == 2 else {
                throw SafetensorsError("\(path): tensor '\(name)' has a malformed header entry")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, offsets: (offsets[0], offsets[1]))
        }
        self.entries = entries
        self.metadata = metadata
    }

    public var tensorNames: [String] { entries.keys.sorted() }

    public func tensor(named name: String) throws -> Tensor {
        guard let e = entries[name] else { throw SafetensorsError("\(path): no tensor named '\(name)'") }
        let count = e.shape.reduce(1, *)
        let start = dataStart + e.offsets.0
        return try data.withUnsafeBytes { raw -> Tensor in
            let base = raw.baseAddress! + start
            switch e.dtype {
            case "F32":
                return Tensor(shape: e.shape) { out in for i in 0..<count { out[i] = base.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) } }
            case "F16":
                return Tensor(shape: e.shape) { out in for i in 0..<count { out[i] = Float(Float16(bitPattern: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) } }
            case "BF16":
                return Tensor(shape: e.shape) { out in for i in 0..<count { out[i] = Float(bitPattern: UInt32(base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) } }
            default:
                throw SafetensorsError("\(path): tensor '\(name)' has dtype \(e.dtype), which cannot be read as floats yet")
            }
        }
    }
}

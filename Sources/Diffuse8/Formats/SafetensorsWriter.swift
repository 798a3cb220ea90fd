/// Builds a `.safetensors` file the way the Python `safetensors` library (0.8, `save_file`) does, byte
/// for byte: compact JSON header with `__metadata__` first, tensors ordered by descending dtype
/// (the Rust `Dtype` order: 8-byte types first, so each tensor stays aligned) then by name, header
/// padded with spaces to a multiple of 8 bytes, data in the same order without gaps.
///
/// `__metadata__` keys are written sorted (Python writes them in hash order, which readers ignore).
/// The file is written atomically (`AtomicFileWriter`); tensors are held in memory until then.
public struct SafetensorsWriter {
    /// One tensor waiting to be written.
    public struct Item: Sendable {
        public let dtype: SafetensorsDType
        public let shape: [Int]
        public let bytes: [UInt8]
    }

    /// Free-form string map stored as `__metadata__` (omitted when empty).
    public var metadata: [String: String]
    public private(set) var items: [String: Item] = [:]

    public init(metadata: [String: String] = [:]) {
        self.metadata = metadata
    }

    /// Adds a tensor from its little-endian bytes. Throws when the name is taken or reserved, a
    /// dimension is negative, or `bytes.count` differs from element count × `dtype.byteSize`.
    public mutating func add(_ name: String, dtype: SafetensorsDType, shape: [Int], bytes: [UInt8]) throws {
        guard !name.isEmpty, name != "__metadata__" else {
            throw SafetensorsError("safetensors writer: '\(name)' cannot be a tensor name")
        }
        guard items[name] == nil else {
            throw SafetensorsError("safetensors writer: tensor '\(name)' was added twice")
        }
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw SafetensorsError("safetensors writer: tensor '\(name)' has a negative dimension in shape \(shape)")
        }
        let expected = shape.reduce(1, *) * dtype.byteSize
        guard bytes.count == expected else {
            throw SafetensorsError("safetensors writer: tensor '\(name)' has \(bytes.count) bytes but shape \(shape) of \(dtype) needs \(expected)")
        }
        items[name] = Item(dtype: dtype, shape: shape, bytes: bytes)
    }

    /// Adds a Float32 tensor stored as `dtype`: `.f32` as is, `.f16` rounded to nearest even like
    /// torch's `.half()` (overflow → ±inf), `.bf16` rounded to nearest even like `.bfloat16()`.
    public mutating func add(_ name: String, _ tensor: Tensor, as dtype: SafetensorsDType = .f32) throws {
        let bytes: [UInt8]
        switch dtype {
        case .f32:
            bytes = tensor.scalars.withUnsafeBytes { Array($0) }
        case .f16:
            bytes = tensor.scalars.map { Float16($0).bitPattern }.withUnsafeBytes { Array($0) }
        case .bf16:
            bytes = tensor.scalars.map(Self.bfloat16Bits).withUnsafeBytes { Array($0) }
        default:
            throw SafetensorsError("safetensors writer: tensor '\(name)': a Float32 tensor can be stored as F32, F16 or BF16, not \(dtype); quantize it and add its bytes instead")
        }
        try add(name, dtype: dtype, shape: tensor.shape, bytes: bytes)
    }

    /// Tensor names in file order.
    public var orderedNames: [String] {
        items.keys.sorted { a, b in
            let ra = items[a]!.dtype.serializationRank, rb = items[b]!.dtype.serializationRank
            return ra != rb ? ra > rb : Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8))
        }
    }

    /// The 8-byte length followed by the padded JSON header.
    public func headerBytes() -> [UInt8] {
        var json = "{"
        var first = true
        if !metadata.isEmpty {
            json += "\"__metadata__\":{"
            json += metadata.keys.sorted().map { "\(Self.quoted($0)):\(Self.quoted(metadata[$0]!))" }.joined(separator: ",")
            json += "}"
            first = false
        }
        var offset = 0
        for name in orderedNames {
            let item = items[name]!
            if !first { json += "," }
            first = false
            let shape = item.shape.map(String.init).joined(separator: ",")
            json += "\(Self.quoted(name)):{\"dtype\":\"\(item.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + item.bytes.count)]}"
            offset += item.bytes.count
        }
        json += "}"
        var header = Array(json.utf8)
        header += [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8)
        return withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
    }

    /// The whole file in memory.
    public func serialized() -> [UInt8] {
        var bytes = headerBytes()
        for name in orderedNames { bytes += items[name]!.bytes }
        return bytes
    }

    /// Writes the file to `path` atomically (no half-written file is ever visible there).
    public func write(to path: String) throws {
        try AtomicFileWriter.write(to: path) { sink in
            try sink.write(headerBytes())
            for name in orderedNames { try sink.write(items[name]!.bytes) }
        }
    }

    /// Round-to-nearest-even truncation of a Float32 to bfloat16 (NaN stays a quiet NaN).
    static func bfloat16Bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(bits >> 16) | 0x0040 }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(rounded >> 16)
    }

    /// A JSON string literal escaped as serde_json escapes it (so headers match Python's byte for byte).
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors raised while reading or writing safetensors files. The description names the file and,
/// where one is concerned, the tensor, and says what is wrong.
public struct SafetensorsError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// The file concerned, when known.
    public let file: String?
    /// The tensor concerned, when the problem is in one tensor's entry.
    public let tensor: String?

    public init(_ description: String) {
        self.description = description
        self.file = nil
        self.tensor = nil
    }

    public init(file: String, tensor: String? = nil, _ problem: String) {
        self.file = file
        self.tensor = tensor
        if let tensor {
            self.description = "\(file): tensor '\(tensor)': \(problem)"
        } else {
            self.description = "\(file): \(problem)"
        }
    }
}

/// A `.safetensors` file, memory-mapped read-only: 8-byte little-endian header length N, N bytes of
/// JSON header, then the raw tensor data. Matches the format written by the Python `safetensors`
/// library (`safetensors.torch.save_file`).
///
/// The whole header is validated when the file is opened, the way the Rust library validates it:
/// the length fits in the file (and is at most 100 MB), the JSON is an object, every entry has a known
/// `dtype`, a non-negative integer `shape` and `data_offsets` [begin, end] inside the data region,
/// the byte count equals element count × element size, and no two tensors overlap. A file failing any
/// check throws a `SafetensorsError` naming the file and the tensor. Gaps between tensors are allowed.
///
/// The data is never copied until a tensor is asked for, so a 5 GB checkpoint costs address space,
/// not 2× RAM. `rawBytes(named:)` gives the stored bytes without conversion; they stay valid while
/// this object lives (it unmaps the file in `deinit`).
public final class SafetensorsFile: TensorStore, @unchecked Sendable {
    /// One tensor's header entry. `offsets` are relative to the start of the data region.
    public struct Entry: Sendable {
        public let dtype: SafetensorsDType
        public let shape: [Int]
        public let offsets: (Int, Int)
        public var elementCount: Int { shape.reduce(1, *) }
        public var byteCount: Int { offsets.1 - offsets.0 }
    }

    /// Largest header accepted (the Rust library's limit).
    public static let maximumHeaderLength = 100_000_000

    public let path: String
    public let entries: [String: Entry]
    /// The `__metadata__` map (empty when absent).
    public let metadata: [String: String]
    /// Every tensor name, sorted.
    public let tensorNames: [String]
    /// Size of the file in bytes.
    public let fileSize: Int
    /// Byte offset of the data region (8 + header length).
    public let dataStart: Int

    // Immutable after init: the mapping is read-only and lives until deinit.
    private let base: UnsafeRawPointer
    private let mappedLength: Int

    public convenience init(path: String) throws {
        let (base, size) = try Self.map(path)
        try self.init(mapping: base, size: size, path: path)
    }

    /// Reads a safetensors image held in memory (copied into a private mapping); `name` stands for the path in
    /// errors. Used where the bytes do not come from a file (tests, fuzzing).
    public convenience init(bytes: [UInt8], name: String) throws {
        guard bytes.count >= 8 else {
            throw SafetensorsError(file: name, "file is \(bytes.count) bytes, too short for the 8-byte safetensors header length (truncated download?)")
        }
        guard let pointer = mmap(nil, bytes.count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), pointer != MAP_FAILED else {
            throw SafetensorsError(file: name, "cannot map \(bytes.count) bytes of memory")
        }
        bytes.withUnsafeBytes { _ = memcpy(pointer, $0.baseAddress!, bytes.count) }
        try self.init(mapping: UnsafeRawPointer(pointer), size: bytes.count, path: name)
    }

    /// Takes ownership of a mapping of `size` bytes (unmapped in `deinit`, or here when the header is invalid).
    private init(mapping base: UnsafeRawPointer, size: Int, path: String) throws {
        self.path = path
        self.base = base
        self.mappedLength = size
        self.fileSize = size
        do {
            let header = try Self.parseHeader(base: base, fileSize: size, path: path)
            self.dataStart = header.dataStart
            self.entries = header.entries
            self.metadata = header.metadata
            self.tensorNames = header.entries.keys.sorted()
        } catch {
            munmap(UnsafeMutableRawPointer(mutating: base), size)
            throw error
        }
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), mappedLength)
    }

    /// The header entry of `name`.
    public func entry(named name: String) throws -> Entry {
        guard let entry = entries[name] else {
            throw SafetensorsError(file: path, tensor: name, "no such tensor in this file (it has \(entries.count) tensors)")
        }
        return entry
    }

    /// The stored bytes of `name`, little-endian, exactly as in the file. Valid while `self` lives.
    public func rawBytes(named name: String) throws -> UnsafeRawBufferPointer {
        let entry = try entry(named: name)
        return UnsafeRawBufferPointer(start: base + dataStart + entry.offsets.0, count: entry.byteCount)
    }

    /// The tensor converted to Float32, whatever its stored dtype (integers and booleans become their
    /// numeric value; F8_E4M3 follows the OCP FP8 spec, see `SafetensorsDType`).
    public func tensor(named name: String) throws -> Tensor {
        let entry = try entry(named: name)
        let source = base + dataStart + entry.offsets.0
        let count = entry.elementCount
        return Tensor(shape: entry.shape) { out in
            Self.convert(source, entry.dtype, count, into: out.baseAddress!)
        }
    }

    // MARK: - Conversion

    private static func convert(_ source: UnsafeRawPointer, _ dtype: SafetensorsDType, _ count: Int,
                                into out: UnsafeMutablePointer<Float>) {
        if dtype == .f32 {
            _ = out.withMemoryRebound(to: UInt8.self, capacity: count * 4) { memcpy($0, source, count * 4) }
            return
        }
        parallelFor(count, minChunk: 1 << 16) { range in
            switch dtype {
            case .f32: break
            case .f16:
                for i in range { out[i] = Float(Float16(bitPattern: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case .bf16:
                for i in range { out[i] = FloatDecoding.bf16ToFloat(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
            case .f64:
                for i in range { out[i] = Float(source.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
            case .f8E4M3:
                FloatDecoding.e4m3Table.withUnsafeBufferPointer { table in
                    for i in range { out[i] = table[Int(source.load(fromByteOffset: i, as: UInt8.self))] }
                }
            case .f8E5M2:
                FloatDecoding.e5m2Table.withUnsafeBufferPointer { table in
                    for i in range { out[i] = table[Int(source.load(fromByteOffset: i, as: UInt8.self))] }
                }
            case .bool, .u8:
                for i in range { out[i] = Float(source.load(fromByteOffset: i, as: UInt8.self)) }
            case .i8:
                for i in range { out[i] = Float(source.load(fromByteOffset: i, as: Int8.self)) }
            case .i16:
                for i in range { out[i] = Float(Int16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
            case .u16:
                for i in range { out[i] = Float(UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case .i32:
                for i in range { out[i] = Float(Int32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
            case .u32:
                for i in range { out[i] = Float(UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
            case .i64:
                for i in range { out[i] = Float(Int64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
            case .u64:
                for i in range { out[i] = Float(UInt64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) }
            }
        }
    }

    // MARK: - Opening and validation

    private static func map(_ path: String) throws -> (UnsafeRawPointer, Int) {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)  // a FIFO in place of the file must not block
        guard fd >= 0 else {
            throw SafetensorsError(file: path, "cannot open the file (\(String(cString: strerror(errno)))); check the path")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw SafetensorsError(file: path, "cannot read the file's size (\(String(cString: strerror(errno))))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw SafetensorsError(file: path, "is not a regular file")
        }
        let size = Int(info.st_size)
        guard size >= 8 else {
            throw SafetensorsError(file: path, "file is \(size) bytes, too short for the 8-byte safetensors header length (truncated download?)")
        }
        guard let pointer = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), pointer != MAP_FAILED else {
            throw SafetensorsError(file: path, "cannot memory-map the file (\(String(cString: strerror(errno))))")
        }
        return (UnsafeRawPointer(pointer), size)
    }

    struct ParsedHeader {
        var dataStart: Int
        var entries: [String: Entry]
        var metadata: [String: String]
    }

    /// Validates a complete safetensors image (`fileSize` bytes at `base`). `path` names it in errors.
    static func parseHeader(base: UnsafeRawPointer, fileSize: Int, path: String) throws -> ParsedHeader {
        guard fileSize >= 8 else {
            throw SafetensorsError(file: path, "file is \(fileSize) bytes, too short for the 8-byte safetensors header length (truncated download?)")
        }
        let headerLength = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(maximumHeaderLength) else {
            throw SafetensorsError(file: path, "header length \(headerLength) is larger than the \(maximumHeaderLength)-byte limit; this is not a valid safetensors file")
        }
        guard headerLength <= UInt64(fileSize - 8) else {
            throw SafetensorsError(file: path, "header length \(headerLength) runs past the end of the \(fileSize)-byte file (truncated download?)")
        }
        let dataStart = 8 + Int(headerLength)
        let dataLength = fileSize - dataStart
        let headerBytes = Data(bytes: base + 8, count: Int(headerLength))

        let json: JSONValue
        do {
            json = try JSONDecoder().decode(JSONValue.self, from: headerBytes)
        } catch {
            throw SafetensorsError(file: path, "the \(headerLength)-byte header is not valid JSON (\(error)); the file is damaged or not safetensors")
        }
        guard let object = json.object else {
            throw SafetensorsError(file: path, "the header is JSON but not an object of tensor entries")
        }
        // A JSON object may repeat a key; decoders keep one of the values silently. A repeated tensor name
        // means two writers disagreed, so the file is refused rather than guessed at.
        if let duplicate = firstDuplicateKey(headerBytes) {
            throw SafetensorsError(file: path, tensor: duplicate, "appears more than once in the header; a tensor name must be unique")
        }

        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                guard let map = value.object else {
                    throw SafetensorsError(file: path, "__metadata__ must be an object of strings")
                }
                for (key, item) in map {
                    guard let text = item.string else {
                        throw SafetensorsError(file: path, "__metadata__ value for '\(key)' is not a string")
                    }
                    metadata[key] = text
                }
                continue
            }
            entries[name] = try parseEntry(name, value, dataLength: dataLength, path: path)
        }
        try checkNoOverlap(entries, path: path)
        return ParsedHeader(dataStart: dataStart, entries: entries, metadata: metadata)
    }

    private static func parseEntry(_ name: String, _ value: JSONValue, dataLength: Int, path: String) throws -> Entry {
        func fail(_ problem: String) -> SafetensorsError { SafetensorsError(file: path, tensor: name, problem) }
        guard value.object != nil else { throw fail("header entry is not an object") }
        guard let dtypeValue = value["dtype"] else { throw fail("header entry has no 'dtype'") }
        guard let dtypeName = dtypeValue.string else { throw fail("'dtype' is not a string") }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
            throw fail("unknown dtype '\(dtypeName)' (known: \(SafetensorsDType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let shapeValue = value["shape"] else { throw fail("header entry has no 'shape'") }
        guard let shapeItems = shapeValue.array else { throw fail("'shape' is not an array") }
        var shape: [Int] = []
        var elementCount = 1
        for item in shapeItems {
            guard let dimension = nonNegativeInteger(item) else {
                throw fail("shape \(render(shapeValue)) has \(render(item)), not a non-negative integer")
            }
            shape.append(dimension)
            let (product, overflow) = elementCount.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw fail("shape \(shape) has too many elements") }
            elementCount = product
        }
        guard let offsetsValue = value["data_offsets"] else { throw fail("header entry has no 'data_offsets'") }
        guard let offsetItems = offsetsValue.array, offsetItems.count == 2,
              let begin = nonNegativeInteger(offsetItems[0]), let end = nonNegativeInteger(offsetItems[1]) else {
            throw fail("'data_offsets' \(render(offsetsValue)) is not a pair of non-negative integers")
        }
        guard begin <= end else { throw fail("data_offsets [\(begin), \(end)] begin after they end") }
        guard end <= dataLength else {
            throw fail("data_offsets [\(begin), \(end)] run past the end of the \(dataLength)-byte data region (truncated file?)")
        }
        let (expected, overflow) = elementCount.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, expected == end - begin else {
            throw fail("holds \(end - begin) bytes but shape \(shape) of \(dtype) needs \(elementCount) × \(dtype.byteSize) = \(elementCount &* dtype.byteSize) bytes")
        }
        return Entry(dtype: dtype, shape: shape, offsets: (begin, end))
    }

    private static func checkNoOverlap(_ entries: [String: Entry], path: String) throws {
        let spans = entries.filter { $0.value.byteCount > 0 }
            .sorted { ($0.value.offsets.0, $0.key) < ($1.value.offsets.0, $1.key) }
        for (previous, next) in zip(spans, spans.dropFirst()) where next.value.offsets.0 < previous.value.offsets.1 {
            throw SafetensorsError(
                file: path, tensor: next.key,
                "data_offsets [\(next.value.offsets.0), \(next.value.offsets.1)] overlap tensor '\(previous.key)' at [\(previous.value.offsets.0), \(previous.value.offsets.1)]")
        }
    }

    /// The first key that occurs twice in the top-level object of `json` (already known to be valid JSON),
    /// compared after unescaping.
    static func firstDuplicateKey(_ json: Data) -> String? {
        let bytes = [UInt8](json)
        var seen = Set<String>()
        var depth = 0, i = 0
        var expectKey = false
        while i < bytes.count {
            let byte = bytes[i]
            switch byte {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                expectKey = depth == 1 && byte == UInt8(ascii: "{")
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
            case UInt8(ascii: ",") where depth == 1:
                expectKey = true
            case UInt8(ascii: "\""):
                let start = i
                var escaped = false
                i += 1
                while i < bytes.count {
                    if bytes[i] == UInt8(ascii: "\\") { escaped = true; i += 2; continue }
                    if bytes[i] == UInt8(ascii: "\"") { break }
                    i += 1
                }
                if depth == 1 && expectKey {
                    expectKey = false
                    let raw = Array(bytes[start...min(i, bytes.count - 1)])
                    var key = String(decoding: raw.dropFirst().dropLast(), as: UTF8.self)
                    if escaped, let decoded = try? JSONDecoder().decode([String].self, from: Data([UInt8(ascii: "[")] + raw + [UInt8(ascii: "]")])),
                       let first = decoded.first {
                        key = first
                    }
                    if !seen.insert(key).inserted { return key }
                }
            default:
                break
            }
            i += 1
        }
        return nil
    }

    /// An integer-valued JSON number in 0...2^53 (the range a Double holds exactly).
    private static func nonNegativeInteger(_ value: JSONValue) -> Int? {
        guard let number = value.double, number >= 0, number <= 9_007_199_254_740_992,
              number == number.rounded(.towardZero) else { return nil }
        return Int(number)
    }

    private static func render(_ value: JSONValue) -> String {
        guard let data = try? JSONEncoder().encode(value), let text = String(data: data, encoding: .utf8) else { return "\(value)" }
        return text
    }
}

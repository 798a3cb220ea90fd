#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Typed access to the keys of a component's `config.json` (UNet, text encoder, VAE), with the
/// library's default for keys that are absent or null. A value of the wrong type is a
/// `ComponentConfigurationError` naming the file, the key and the value.
struct ComponentConfigReader {
    let json: JSONValue
    /// The file (or label) named in errors.
    let source: String

    /// Throws unless `json` is an object.
    init(_ json: JSONValue, source: String) throws {
        self.json = json
        self.source = source
        guard json.object != nil else {
            throw ComponentConfigurationError(source: source, reason: "the configuration must be a JSON object")
        }
    }

    /// Reads and parses `path`.
    static func load(_ path: String) throws -> JSONValue {
        guard let data = InputFile.contents(atPath: path) else {
            throw ComponentConfigurationError(source: path, reason: "cannot read the file; a model folder needs its config.json")
        }
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw ComponentConfigurationError(source: path, reason: "not valid JSON (\(error))")
        }
    }

    /// Whether `key` is there and not null.
    func isPresent(_ key: String) -> Bool { json[key].map { !$0.isNull } ?? false }

    /// An error about `key`, showing its value.
    func error(_ key: String, _ reason: String) -> ComponentConfigurationError {
        ComponentConfigurationError(source: source, key: key, value: json[key].map(Self.render) ?? "(missing)", reason: reason)
    }

    /// JSON-like text of a value for error messages.
    static func render(_ v: JSONValue) -> String {
        switch v {
        case .null: return "null"
        case .bool(let b): return String(b)
        case .number(let n): return n.isFinite && n == n.rounded() && abs(n) < 1e15 ? String(Int(n)) : String(n)
        case .string(let s): return "\"\(s)\""
        case .array(let a): return "[" + a.map(render).joined(separator: ", ") + "]"
        case .object: return "{…}"
        }
    }

    /// The value of `key` converted by `convert`; nil when absent or null; an error saying `expected` otherwise.
    private func value<T>(_ key: String, _ expected: String, _ convert: (JSONValue) -> T?) throws -> T? {
        guard let v = json[key], !v.isNull else { return nil }
        guard let converted = convert(v) else { throw error(key, "expected \(expected)") }
        return converted
    }

    /// A list of values each converted by `convert`.
    private func list<T>(_ key: String, _ expected: String, _ convert: (JSONValue) -> T?) throws -> [T]? {
        try value(key, expected) { v in
            guard let a = v.array, case let items = a.compactMap(convert), items.count == a.count else { return nil }
            return items
        }
    }

    func int(_ key: String, default d: Int) throws -> Int { try optionalInt(key) ?? d }
    func optionalInt(_ key: String) throws -> Int? { try value(key, "an integer", \.int) }
    func double(_ key: String, default d: Double) throws -> Double { try optionalDouble(key) ?? d }
    func optionalDouble(_ key: String) throws -> Double? { try value(key, "a number", \.double) }
    func bool(_ key: String, default d: Bool) throws -> Bool { try value(key, "true or false", \.bool) ?? d }
    func string(_ key: String, default d: String) throws -> String { try optionalString(key) ?? d }
    func optionalString(_ key: String) throws -> String? { try value(key, "a string", \.string) }
    func ints(_ key: String, default d: [Int]) throws -> [Int] { try list(key, "a list of integers", \.int) ?? d }
    func strings(_ key: String, default d: [String]) throws -> [String] { try list(key, "a list of strings", \.string) ?? d }
    func optionalDoubles(_ key: String) throws -> [Double]? { try list(key, "a list of numbers", \.double) }

    // MARK: Values with an allowed range (every number that sizes an allocation or indexes an array has one)

    /// An integer in `range`.
    func int(_ key: String, default d: Int, in range: ClosedRange<Int>) throws -> Int {
        let v = try int(key, default: d)
        guard range.contains(v) else { throw error(key, "must be an integer in \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    /// An optional integer in `range`.
    func optionalInt(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let v = try optionalInt(key) else { return nil }
        guard range.contains(v) else { throw error(key, "must be an integer in \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    /// A list of integers, each in `range`, with `count` entries allowed.
    func ints(_ key: String, default d: [Int], in range: ClosedRange<Int>, count: ClosedRange<Int>) throws -> [Int] {
        let v = try ints(key, default: d)
        guard count.contains(v.count) else {
            throw error(key, "must list \(count.lowerBound)...\(count.upperBound) entries, has \(v.count)")
        }
        guard v.allSatisfy(range.contains) else {
            throw error(key, "every entry must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return v
    }

    /// A finite number in `range` (`nonZero`: and not 0).
    func double(_ key: String, default d: Double, in range: ClosedRange<Double>, nonZero: Bool = false) throws -> Double {
        let v = try double(key, default: d)
        guard v.isFinite, range.contains(v), !nonZero || v != 0 else {
            throw error(key, "must be a finite number in [\(range.lowerBound), \(range.upperBound)]\(nonZero ? " other than 0" : "")")
        }
        return v
    }

    /// Rejects a `_class_name` other than `expected` (absent is fine: the folder's model_index names the class).
    func requireClassName(_ expected: String) throws {
        guard let v = json["_class_name"], !v.isNull else { return }
        guard v.string == expected else { throw error("_class_name", "must be \"\(expected)\" for this component") }
    }

    /// The same per-block values, each in `range`.
    func perBlock(_ key: String, blocks: Int, default d: Int, in range: ClosedRange<Int>) throws -> [Int] {
        let values = try perBlock(key, blocks: blocks, default: d)
        guard values.allSatisfy(range.contains) else {
            throw error(key, "every entry must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return values
    }

    /// diffusers' "one value or one per down block" keys (`layers_per_block`, `attention_head_dim`, ...):
    /// an integer or a list of `blocks` integers, expanded to the list.
    func perBlock(_ key: String, blocks: Int, default d: Int) throws -> [Int] {
        guard let v = json[key], !v.isNull else { return Array(repeating: d, count: blocks) }
        if let i = v.int { return Array(repeating: i, count: blocks) }
        guard let a = v.array else { throw error(key, "expected an integer or a list of \(blocks) integers") }
        guard a.count == blocks else { throw error(key, "has \(a.count) entries but there are \(blocks) down blocks") }
        return try a.map {
            guard let i = $0.int else {
                throw error(key, "expected an integer or a list of \(blocks) integers (nested per-layer lists are not supported)")
            }
            return i
        }
    }
}

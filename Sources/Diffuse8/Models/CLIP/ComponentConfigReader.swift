#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A text encoder or VAE folder whose `config.json` or weights cannot be used. The description names
/// the file and key and says what to do.
public struct ComponentConfigurationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Typed access to `config.json` keys with defaults; wrong types are errors naming the key.
struct ComponentConfigReader {
    let json: JSONValue
    let source: String

    static func load(_ path: String) throws -> JSONValue {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ComponentConfigurationError("\(path): cannot read the file; a model folder needs its config.json")
        }
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw ComponentConfigurationError("\(path): not valid JSON (\(error))")
        }
    }

    private func present(_ key: String) -> JSONValue? {
        guard let value = json[key], !value.isNull else { return nil }
        return value
    }

    func int(_ key: String, default fallback: Int) throws -> Int {
        guard let value = present(key) else { return fallback }
        guard let i = value.int else { throw ComponentConfigurationError("\(source): `\(key)` must be an integer, found \(value)") }
        return i
    }

    func double(_ key: String, default fallback: Double) throws -> Double {
        guard let value = present(key) else { return fallback }
        guard let d = value.double else { throw ComponentConfigurationError("\(source): `\(key)` must be a number, found \(value)") }
        return d
    }

    func optionalDouble(_ key: String) throws -> Double? {
        guard let value = present(key) else { return nil }
        guard let d = value.double else { throw ComponentConfigurationError("\(source): `\(key)` must be a number or null, found \(value)") }
        return d
    }

    func string(_ key: String, default fallback: String) throws -> String {
        guard let value = present(key) else { return fallback }
        guard let s = value.string else { throw ComponentConfigurationError("\(source): `\(key)` must be a string, found \(value)") }
        return s
    }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard let value = present(key) else { return fallback }
        guard let b = value.bool else { throw ComponentConfigurationError("\(source): `\(key)` must be true or false, found \(value)") }
        return b
    }

    func ints(_ key: String, default fallback: [Int]) throws -> [Int] {
        guard let value = present(key) else { return fallback }
        guard let a = value.array, case let ints = a.compactMap(\.int), ints.count == a.count else {
            throw ComponentConfigurationError("\(source): `\(key)` must be a list of integers, found \(value)")
        }
        return ints
    }

    func strings(_ key: String, default fallback: [String]) throws -> [String] {
        guard let value = present(key) else { return fallback }
        guard let a = value.array, case let strings = a.compactMap(\.string), strings.count == a.count else {
            throw ComponentConfigurationError("\(source): `\(key)` must be a list of strings, found \(value)")
        }
        return strings
    }

    func optionalDoubles(_ key: String) throws -> [Double]? {
        guard let value = present(key) else { return nil }
        guard let a = value.array, case let ds = a.compactMap(\.double), ds.count == a.count else {
            throw ComponentConfigurationError("\(source): `\(key)` must be a list of numbers or null, found \(value)")
        }
        return ds
    }
}

extension ComponentConfigReader {
    /// Opens the first of `candidates` (file names inside `directory`) that exists; failing that, a sharded
    /// checkpoint (`<candidate>.index.json` and its shards, read through the UNet's sharded reader).
    static func openWeights(directory: String, candidates: [String]) throws -> TensorStore {
        for name in candidates where FileManager.default.fileExists(atPath: directory + "/" + name) {
            return try SafetensorsFile(path: directory + "/" + name)
        }
        for name in candidates where FileManager.default.fileExists(atPath: directory + "/" + name + ".index.json") {
            return try UNetShardedWeights(index: directory + "/" + name + ".index.json")
        }
        throw ComponentConfigurationError(
            "\(directory): no weights file found (looked for \(candidates.joined(separator: ", ")) and their .index.json)")
    }
}

/// Wraps a weight store and records which tensors a model reads, so that tensors it never used can be
/// reported: a `num_hidden_layers`, `layers_per_block` or `use_quant_conv` that does not belong to the
/// weights would otherwise silently drop layers.
final class ComponentWeightAudit: TensorStore {
    let base: TensorStore
    let tensorNames: [String]
    private(set) var used: Set<String> = []

    init(_ base: TensorStore) {
        self.base = base
        tensorNames = base.tensorNames
    }

    func tensor(named name: String) throws -> Tensor {
        used.insert(name)
        return try base.tensor(named: name)
    }

    /// Throws when a tensor other than those matching `ignoring` was never read. `component` names the model.
    func requireAllUsed(component: String, ignoring: (String) -> Bool = { _ in false }) throws {
        let unused = tensorNames.filter { !used.contains($0) && !ignoring($0) }
        guard unused.isEmpty else {
            let shown = unused.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
            throw ComponentConfigurationError(
                "\(component): \(unused.count) weight tensor(s) are not used by the model its config.json describes "
                + "(\(shown)\(unused.count > 5 ? ", …" : "")); the config and the weights do not belong together")
        }
    }

    /// Throws unless `tensor` has `shape`; `name` is the state-dict key.
    static func requireShape(_ tensor: Tensor, _ shape: [Int], _ name: String) throws {
        guard tensor.shape == shape else {
            throw ComponentConfigurationError(
                "tensor '\(name)' has shape \(tensor.shape) but the config.json describes \(shape); the config and the weights do not belong together")
        }
    }
}

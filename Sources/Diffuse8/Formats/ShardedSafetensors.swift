#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A tensor store backed by safetensors files, with access to the stored (unconverted) bytes —
/// what quantization and inspection need beyond `TensorStore`.
public protocol SafetensorsStore: TensorStore {
    /// The files the tensors live in.
    var files: [String] { get }
    /// The header entry (dtype, shape, offsets) of `name`.
    func entry(named name: String) throws -> SafetensorsFile.Entry
    /// The stored bytes of `name`; valid while the store lives.
    func rawBytes(named name: String) throws -> UnsafeRawBufferPointer
}

extension SafetensorsFile: SafetensorsStore {
    public var files: [String] { [path] }
}

/// Weights split over several safetensors files by a `*.safetensors.index.json`
/// (`{"metadata": {...}, "weight_map": {tensor: shard file}}`), as `save_pretrained(max_shard_size=...)`
/// in diffusers and transformers writes them.
///
/// Every shard named in the map is opened (memory-mapped, so this is cheap) and checked when the store
/// is created: each shard must exist and hold every tensor the map assigns to it.
public final class ShardedSafetensors: SafetensorsStore, @unchecked Sendable {
    /// The index file.
    public let indexPath: String
    public let tensorNames: [String]
    /// Shard file path for each tensor.
    public let shardPaths: [String: String]
    private let shards: [String: SafetensorsFile]

    public init(indexPath: String) throws {
        self.indexPath = indexPath
        guard let data = InputFile.contents(atPath: indexPath) else {
            throw SafetensorsError(file: indexPath, "cannot read the shard index file")
        }
        let index: JSONValue
        do { index = try JSONDecoder().decode(JSONValue.self, from: data) } catch {
            throw SafetensorsError(file: indexPath, "the shard index is not valid JSON (\(error))")
        }
        guard let map = index["weight_map"]?.object else {
            throw SafetensorsError(file: indexPath, "the shard index has no \"weight_map\" object")
        }
        let folder = AtomicFileWriter.split(indexPath).directory
        var shardPaths: [String: String] = [:]
        var shards: [String: SafetensorsFile] = [:]
        for (tensor, value) in map {
            guard let file = value.string, !file.isEmpty, !file.hasPrefix("/") else {
                throw SafetensorsError(file: indexPath, tensor: tensor, "weight_map entry is not a file name")
            }
            let path = folder + "/" + file
            if shards[path] == nil {
                guard FileManager.default.fileExists(atPath: path) else {
                    throw SafetensorsError(file: indexPath, tensor: tensor, "shard \(path) is missing; the download is incomplete")
                }
                shards[path] = try SafetensorsFile(path: path)
            }
            guard shards[path]!.entries[tensor] != nil else {
                throw SafetensorsError(file: indexPath, tensor: tensor, "the index puts it in \(path), which does not contain it")
            }
            shardPaths[tensor] = path
        }
        self.shardPaths = shardPaths
        self.shards = shards
        self.tensorNames = shardPaths.keys.sorted()
    }

    public var files: [String] { shards.keys.sorted() }

    private func shard(for name: String) throws -> SafetensorsFile {
        guard let path = shardPaths[name], let shard = shards[path] else {
            throw SafetensorsError(file: indexPath, tensor: name, "no such tensor in this sharded checkpoint")
        }
        return shard
    }

    public func tensor(named name: String) throws -> Tensor { try shard(for: name).tensor(named: name) }
    public func entry(named name: String) throws -> SafetensorsFile.Entry { try shard(for: name).entry(named: name) }
    public func rawBytes(named name: String) throws -> UnsafeRawBufferPointer { try shard(for: name).rawBytes(named: name) }
}

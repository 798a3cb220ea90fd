#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Weights split over several safetensors files, as diffusers' `save_pretrained` writes large models:
/// a `*.safetensors.index.json` whose `weight_map` names the shard of every tensor.
final class UNetShardedWeights: TensorStore {
    let shards: [SafetensorsFile]
    private let shardOfTensor: [String: Int]
    let tensorNames: [String]

    init(index path: String) throws {
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        guard let data = FileManager.default.contents(atPath: path) else { throw UNetWeightsError("\(path): cannot read the file") }
        guard let map = try JSONDecoder().decode(JSONValue.self, from: data)["weight_map"]?.object else {
            throw UNetWeightsError("\(path): no \"weight_map\" object")
        }
        var fileNames: [String] = []
        for (name, file) in map {
            guard let file = file.string else { throw UNetWeightsError("\(path): weight_map entry '\(name)' is not a file name") }
            if !fileNames.contains(file) { fileNames.append(file) }
        }
        shards = try fileNames.sorted().map { try SafetensorsFile(path: directory + "/" + $0) }
        var owner: [String: Int] = [:]
        for (i, shard) in shards.enumerated() {
            for name in shard.tensorNames {
                if owner[name] != nil { throw UNetWeightsError("\(path): tensor '\(name)' is in two shards") }
                owner[name] = i
            }
        }
        for name in map.keys where owner[name] == nil {
            throw UNetWeightsError("\(path): weight_map lists '\(name)' but no shard holds it")
        }
        shardOfTensor = owner
        tensorNames = owner.keys.sorted()
    }

    func tensor(named name: String) throws -> Tensor {
        guard let i = shardOfTensor[name] else { throw UNetWeightsError("no tensor named '\(name)' in the UNet shards") }
        return try shards[i].tensor(named: name)
    }
}

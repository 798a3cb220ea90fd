import Foundation
import XCTest
@testable import Diffuse8

/// Loading the tiny diffusers fixtures, checked against `Tests/Fixtures/formats/model_summaries.json`
/// (parameter counts from diffusers/transformers `from_pretrained`), and broken copies made per test.
final class DiffusersFolderTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws { directory = try FormatsTestFiles.make() }
    override func tearDownWithError() throws { FormatsTestFiles.remove(directory) }

    private func referenceSummaries() throws -> JSONValue {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("formats/model_summaries.json")))
        return try JSONDecoder().decode(JSONValue.self, from: data)
    }

    /// A writable copy of a fixture pipeline.
    private func copy(_ fixture: String) throws -> String {
        let target = directory + "/" + fixture
        try FileManager.default.copyItem(atPath: Fixtures.path(fixture), toPath: target)
        return target
    }

    private func assertError(_ expression: @autoclosure () throws -> Any, mentions words: [String],
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try expression(), file: file, line: line) { error in
            for word in words { XCTAssertTrue("\(error)".contains(word), "'\(word)' missing from: \(error)", file: file, line: line) }
        }
    }

    private func checkSummary(_ fixture: String) throws {
        let folder = try DiffusersFolder(path: Fixtures.path(fixture))
        let reference = try XCTUnwrap(referenceSummaries()[fixture]?.object)
        let summary = try folder.summary()
        let withWeights = summary.components.filter { $0.parameterCount != nil }
        XCTAssertEqual(withWeights.map(\.name).sorted(), reference.keys.sorted())
        for component in withWeights {
            let want = try XCTUnwrap(reference[component.name])
            XCTAssertEqual(component.className, want["class"]?.string, component.name)
            XCTAssertEqual(component.parameterCount, want["parameters"]?.int, component.name)
            XCTAssertEqual(component.dtypes.map(\.rawValue), want["dtypes"]?.array?.compactMap(\.string), component.name)
            XCTAssertEqual(component.byteCount, component.parameterCount.map { $0 * 2 }, component.name)  // all F16
        }
        XCTAssertTrue(summary.description.contains(folder.pipelineClass))
    }

    func testTinySD15() throws {
        let folder = try DiffusersFolder(path: Fixtures.path("tiny-sd15"))
        XCTAssertEqual(folder.pipelineClass, "StableDiffusionPipeline")
        XCTAssertEqual(folder.family, .stableDiffusion)
        XCTAssertEqual(folder.componentNames, ["scheduler", "text_encoder", "tokenizer", "unet", "vae"])
        XCTAssertEqual(folder.nullComponents, ["feature_extractor", "image_encoder", "safety_checker"])
        XCTAssertEqual(try folder.component("unet"), .init(name: "unet", library: "diffusers", className: "UNet2DConditionModel"))
        XCTAssertEqual(try folder.config(of: "scheduler")["_class_name"]?.string, "PNDMScheduler")
        XCTAssertNotNil(try folder.config(of: "unet")["cross_attention_dim"]?.int)
        XCTAssertEqual(try folder.folder(of: "tokenizer"), Fixtures.path("tiny-sd15/tokenizer"))
        XCTAssertEqual(try folder.weightsPath(of: "text_encoder"), Fixtures.path("tiny-sd15/text_encoder/model.safetensors"))
        let unet = try folder.weights(of: "unet")
        XCTAssertEqual(unet.files, [Fixtures.path("tiny-sd15/unet/diffusion_pytorch_model.safetensors")])
        XCTAssertTrue(unet.contains("conv_in.weight"))
        try checkSummary("tiny-sd15")
    }

    func testTinySDXL() throws {
        let folder = try DiffusersFolder(path: Fixtures.path("tiny-sdxl") + "/")
        XCTAssertEqual(folder.family, .stableDiffusionXL)
        XCTAssertEqual(folder.componentNames,
                       ["scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "vae"])
        XCTAssertEqual(folder.index["force_zeros_for_empty_prompt"]?.bool, true)
        XCTAssertEqual(try folder.component("text_encoder_2").className, "CLIPTextModelWithProjection")
        XCTAssertEqual(try folder.config(of: "unet")["addition_embed_type"]?.string, "text_time")
        try checkSummary("tiny-sdxl")
    }

    func testFP16VariantIsFound() throws {
        let root = try copy("tiny-sd15")
        let fm = FileManager.default
        try fm.moveItem(atPath: root + "/unet/diffusion_pytorch_model.safetensors",
                        toPath: root + "/unet/diffusion_pytorch_model.fp16.safetensors")
        let folder = try DiffusersFolder(path: root)
        XCTAssertEqual(try folder.weightsPath(of: "unet"), root + "/unet/diffusion_pytorch_model.fp16.safetensors")
        // With both present, the variant is preferred only when asked for.
        try fm.copyItem(atPath: root + "/text_encoder/model.safetensors", toPath: root + "/text_encoder/model.fp16.safetensors")
        XCTAssertEqual(try folder.weightsPath(of: "text_encoder"), root + "/text_encoder/model.safetensors")
        XCTAssertEqual(try folder.weightsPath(of: "text_encoder", variant: "fp16"), root + "/text_encoder/model.fp16.safetensors")
        let original = try SafetensorsFile(path: Fixtures.path("tiny-sd15/unet/diffusion_pytorch_model.safetensors"))
        XCTAssertEqual(try folder.weights(of: "unet").tensor(named: "conv_in.weight").scalars,
                       try original.tensor(named: "conv_in.weight").scalars)
    }

    /// Splits the UNet into two shards with an index, as `save_pretrained(max_shard_size=...)` does.
    private func shardUNet(_ root: String) throws -> SafetensorsFile {
        let unetFolder = root + "/unet"
        let original = try SafetensorsFile(path: unetFolder + "/diffusion_pytorch_model.safetensors")
        var shards = [SafetensorsWriter(), SafetensorsWriter()]
        var map: [String: String] = [:]
        for (i, name) in original.tensorNames.enumerated() {
            let entry = try original.entry(named: name)
            try shards[i % 2].add(name, dtype: entry.dtype, shape: entry.shape, bytes: Array(try original.rawBytes(named: name)))
            map[name] = "diffusion_pytorch_model-0000\(i % 2 + 1)-of-00002.safetensors"
        }
        for (i, shard) in shards.enumerated() {
            try shard.write(to: unetFolder + "/diffusion_pytorch_model-0000\(i + 1)-of-00002.safetensors")
        }
        let index = try JSONEncoder().encode(JSONValue.object([
            "metadata": .object(["total_size": .number(1)]),
            "weight_map": .object(map.mapValues { .string($0) }),
        ]))
        try index.write(to: URL(fileURLWithPath: unetFolder + "/diffusion_pytorch_model.safetensors.index.json"))
        try FileManager.default.removeItem(atPath: unetFolder + "/diffusion_pytorch_model.safetensors")
        return original
    }

    func testShardedWeights() throws {
        let root = try copy("tiny-sd15")
        let original = try shardUNet(root)
        let folder = try DiffusersFolder(path: root)
        let store = try folder.weights(of: "unet")
        XCTAssertTrue(store is ShardedSafetensors)
        XCTAssertEqual(store.files.count, 2)
        XCTAssertEqual(store.tensorNames, original.tensorNames)
        for name in original.tensorNames {
            XCTAssertEqual(try store.tensor(named: name).scalars, try original.tensor(named: name).scalars, name)
            XCTAssertEqual(Array(try store.rawBytes(named: name)), Array(try original.rawBytes(named: name)), name)
        }
        XCTAssertEqual(try folder.summary().components.first { $0.name == "unet" }?.parameterCount,
                       try referenceSummaries()["tiny-sd15"]?["unet"]?["parameters"]?.int)
        // A missing shard is named.
        try FileManager.default.removeItem(atPath: root + "/unet/diffusion_pytorch_model-00002-of-00002.safetensors")
        assertError(try folder.weights(of: "unet"), mentions: ["diffusion_pytorch_model-00002-of-00002.safetensors", "missing"])
    }

    func testShardIndexPointingAtTheWrongShard() throws {
        let root = try copy("tiny-sd15")
        _ = try shardUNet(root)
        let indexPath = root + "/unet/diffusion_pytorch_model.safetensors.index.json"
        var index = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: indexPath)))
        guard case .object(var top) = index, case .object(var map) = top["weight_map"]! else { return XCTFail() }
        map["conv_in.weight"] = .string(map["conv_in.weight"]!.string!.contains("00001")
            ? "diffusion_pytorch_model-00002-of-00002.safetensors" : "diffusion_pytorch_model-00001-of-00002.safetensors")
        top["weight_map"] = .object(map)
        index = .object(top)
        try JSONEncoder().encode(index).write(to: URL(fileURLWithPath: indexPath))
        assertError(try DiffusersFolder(path: root).weights(of: "unet"), mentions: ["'conv_in.weight'", "does not contain it"])
    }

    func testMissingOrBrokenFolders() throws {
        assertError(try DiffusersFolder(path: directory + "/nothing"), mentions: [directory + "/nothing", "does not exist"])
        assertError(try DiffusersFolder(path: directory), mentions: ["no model_index.json"])
        assertError(try DiffusersFolder(path: Fixtures.path("tiny-sd15/unet/config.json")), mentions: ["is a file"])

        let root = try copy("tiny-sd15")
        let indexPath = root + "/model_index.json"
        let original = try String(contentsOfFile: indexPath, encoding: .utf8)
        try original.replacingOccurrences(of: "\"StableDiffusionPipeline\"", with: "\"KandinskyPipeline\"")
            .write(toFile: indexPath, atomically: true, encoding: .utf8)
        assertError(try DiffusersFolder(path: root), mentions: ["'KandinskyPipeline'", "not supported", indexPath])
        try "{ not json".write(toFile: indexPath, atomically: true, encoding: .utf8)
        assertError(try DiffusersFolder(path: root), mentions: [indexPath, "not valid JSON"])
        try original.write(toFile: indexPath, atomically: true, encoding: .utf8)

        let folder = try DiffusersFolder(path: root)
        assertError(try folder.component("text_encoder_2"), mentions: ["no component 'text_encoder_2'", indexPath])
        assertError(try folder.component("safety_checker"), mentions: ["'safety_checker' to null"])
        try FileManager.default.removeItem(atPath: root + "/vae")
        assertError(try folder.weights(of: "vae"), mentions: [root + "/vae", "missing"])
        assertError(try folder.summary(), mentions: [root + "/vae"])

        try FileManager.default.moveItem(atPath: root + "/unet/diffusion_pytorch_model.safetensors",
                                         toPath: root + "/unet/diffusion_pytorch_model.bin")
        assertError(try folder.weights(of: "unet"), mentions: [root + "/unet", "no safetensors weights", ".bin"])
        try FileManager.default.removeItem(atPath: root + "/scheduler/scheduler_config.json")
        assertError(try folder.config(of: "scheduler"), mentions: [root + "/scheduler", "scheduler_config.json"])
    }
}

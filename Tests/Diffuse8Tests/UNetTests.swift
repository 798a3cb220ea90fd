import XCTest
@testable import Diffuse8

/// UNet2DConditionModel against diffusers (tools/reference/unet.py) on the tiny fixture UNets.
final class UNetTests: XCTestCase {
    private func compare(layout: String, file: StaticString = #filePath, line: UInt = #line) throws -> (Double, Double) {
        let unet = try UNet2DConditionModel.load(directory: Fixtures.path("tiny-\(layout)/unet"))
        let reference = try Fixtures.reference("unet_\(layout)")
        let hasText = reference.contains("text_embeds")
        let textEmbeds = hasText ? try reference.tensor(named: "text_embeds") : nil
        let timeIds = hasText ? try reference.tensor(named: "time_ids") : nil

        let out = unet(sample: try reference.tensor(named: "sample"),
                       timesteps: try reference.tensor(named: "timesteps").scalars,
                       encoderHiddenStates: try reference.tensor(named: "encoder_hidden_states"),
                       textEmbeds: textEmbeds, timeIds: timeIds)
        let expected = try reference.tensor(named: "out")
        XCTAssertEqual(out.shape, expected.shape, file: file, line: line)
        let error = out.relativeL2(to: expected)

        // Batch 1, 10×6 latent (not a multiple of 4: diffusers forwards the skip sizes to the upsamplers),
        // one fractional timestep.
        let oddOut = unet(sample: try reference.tensor(named: "odd_sample"),
                          timestep: try reference.tensor(named: "odd_timesteps").scalars[0],
                          encoderHiddenStates: try reference.tensor(named: "odd_encoder_hidden_states"),
                          textEmbeds: textEmbeds?.slice(0, 1), timeIds: timeIds?.slice(1, 2))
        let oddExpected = try reference.tensor(named: "odd_out")
        XCTAssertEqual(oddOut.shape, oddExpected.shape, file: file, line: line)
        let oddError = oddOut.relativeL2(to: oddExpected)
        print("UNet \(layout): relative L2 \(error) (batch 2, 8×8), \(oddError) (batch 1, 10×6)")
        XCTAssertLessThan(error, 1e-4, file: file, line: line)
        XCTAssertLessThan(oddError, 1e-4, file: file, line: line)
        return (error, oddError)
    }

    func testSD15MatchesDiffusers() throws { _ = try compare(layout: "sd15") }

    func testSDXLMatchesDiffusers() throws { _ = try compare(layout: "sdxl") }

    func testLayerListsNameEveryQuantizableLayer() throws {
        let unet = try UNet2DConditionModel.load(directory: Fixtures.path("tiny-sdxl/unet"))
        let linear = unet.linearLayers.map(\.name), conv = unet.convolutionLayers.map(\.name)
        XCTAssertEqual(Set(linear).count, linear.count)
        XCTAssertEqual(Set(conv).count, conv.count)
        // Every Linear/Conv weight in the state dict appears exactly once.
        let store = try SafetensorsFile(path: Fixtures.path("tiny-sdxl/unet/diffusion_pytorch_model.safetensors"))
        let weightPrefixes = store.tensorNames.filter { $0.hasSuffix(".weight") }
            .filter { (try? store.tensor(named: $0).shape.count).map { $0 == 2 || $0 == 4 } ?? false }
            .map { String($0.dropLast(".weight".count)) }
        XCTAssertEqual(Set(linear + conv), Set(weightPrefixes))
        XCTAssertEqual(linear.first, "time_embedding.linear_1")
        XCTAssertEqual(conv.first, "conv_in")
        XCTAssertEqual(conv.last, "conv_out")
        XCTAssertTrue(linear.contains("down_blocks.2.attentions.1.transformer_blocks.1.ff.net.0.proj"))
        XCTAssertTrue(linear.contains("add_embedding.linear_2"))
        let sd15 = try UNet2DConditionModel.load(directory: Fixtures.path("tiny-sd15/unet"))
        XCTAssertTrue(sd15.convolutionLayers.map(\.name).contains("down_blocks.0.attentions.0.proj_in"))
    }

    /// A store with one tensor added or removed, to test the weight audit.
    private struct EditedStore: TensorStore {
        let base: TensorStore
        var extra: [String: Tensor] = [:]
        var removed: Set<String> = []
        var tensorNames: [String] { (base.tensorNames.filter { !removed.contains($0) } + extra.keys).sorted() }
        func tensor(named name: String) throws -> Tensor {
            if let t = extra[name] { return t }
            guard !removed.contains(name) else { throw ComponentWeightsError("no \(name)") }
            return try base.tensor(named: name)
        }
    }

    func testWeightAuditNamesUnusedMissingAndMisshapenTensors() throws {
        let directory = Fixtures.path("tiny-sd15/unet")
        let configuration = try UNetConfiguration(contentsOf: directory + "/config.json")
        let base = try SafetensorsFile(path: directory + "/diffusion_pytorch_model.safetensors")

        XCTAssertThrowsError(try UNet2DConditionModel(configuration: configuration,
                                                      weights: EditedStore(base: base, extra: ["class_embedding.linear_1.weight": Tensor(zeros: [4, 4])]))) {
            XCTAssertTrue("\($0)".contains("class_embedding.linear_1.weight"), "\($0)")
        }
        XCTAssertThrowsError(try UNet2DConditionModel(configuration: configuration,
                                                      weights: EditedStore(base: base, removed: ["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"]))) {
            XCTAssertTrue("\($0)".contains("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"), "\($0)")
        }
        // SDXL-style linear projections against SD1.5 conv weights: a shape error naming proj_in.
        var linear = configuration
        linear.useLinearProjection = true
        XCTAssertThrowsError(try UNet2DConditionModel(configuration: linear, weights: base)) {
            XCTAssertTrue("\($0)".contains("proj_in.weight"), "\($0)")
        }
    }

    /// Writes F32 tensors as a safetensors file (test helper; the sharded loader reads it back).
    private func writeSafetensors(_ tensors: [(String, Tensor)], to path: String) throws {
        var header: [String: JSONValue] = [:]
        var payload = Data()
        for (name, t) in tensors {
            let start = payload.count
            t.scalars.withUnsafeBytes { payload.append(contentsOf: $0) }
            header[name] = .object(["dtype": .string("F32"), "shape": .array(t.shape.map { .number(Double($0)) }),
                                    "data_offsets": .array([.number(Double(start)), .number(Double(payload.count))])])
        }
        var json = try JSONEncoder().encode(JSONValue.object(header))
        while json.count % 8 != 0 { json.append(0x20) }
        var length = UInt64(json.count).littleEndian
        var file = Data(bytes: &length, count: 8)
        file.append(json)
        file.append(payload)
        try file.write(to: URL(fileURLWithPath: path))
    }

    func testLoadsShardedWeights() throws {
        let source = Fixtures.path("tiny-sd15/unet")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("unet-shards-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(atPath: source + "/config.json", toPath: directory + "/config.json")
        let store = try SafetensorsFile(path: source + "/diffusion_pytorch_model.safetensors")
        let names = store.tensorNames
        var weightMap: [String: JSONValue] = [:]
        for (i, part) in [names[..<(names.count / 2)], names[(names.count / 2)...]].enumerated() {
            let file = "diffusion_pytorch_model-0000\(i + 1)-of-00002.safetensors"
            try writeSafetensors(try part.map { ($0, try store.tensor(named: $0)) }, to: directory + "/" + file)
            for name in part { weightMap[name] = .string(file) }
        }
        try JSONEncoder().encode(JSONValue.object(["metadata": .object([:]), "weight_map": .object(weightMap)]))
            .write(to: URL(fileURLWithPath: directory + "/diffusion_pytorch_model.safetensors.index.json"))

        let sharded = try UNet2DConditionModel.load(directory: directory)
        let reference = try Fixtures.reference("unet_sd15")
        let out = sharded(sample: try reference.tensor(named: "sample"), timesteps: try reference.tensor(named: "timesteps").scalars,
                          encoderHiddenStates: try reference.tensor(named: "encoder_hidden_states"))
        XCTAssertLessThan(out.relativeL2(to: try reference.tensor(named: "out")), 1e-4)
    }
}

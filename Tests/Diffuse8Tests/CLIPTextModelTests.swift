import XCTest
@testable import Diffuse8

/// CLIP text encoders against transformers 5.24 (FP32) on the fixture encoders; references from
/// `tools/reference/text_encoder.py`.
final class CLIPTextModelTests: XCTestCase {
    static let tolerance = 1e-4

    /// Token ids saved by the reference script (stored as Float32).
    private func tokenIDs(_ reference: SafetensorsFile) throws -> [[Int]] {
        let ids = try reference.tensor(named: "input_ids")
        let length = ids.shape[1]
        return (0..<ids.shape[0]).map { b in (0..<length).map { Int(ids.scalars[b * length + $0]) } }
    }

    private func assertClose(_ actual: Tensor, _ reference: SafetensorsFile, _ name: String, _ label: String,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try reference.tensor(named: name)
        XCTAssertEqual(actual.shape, expected.shape, "\(label) \(name) shape", file: file, line: line)
        let error = actual.relativeL2(to: expected)
        print("[CLIP] \(label) \(name): relative L2 \(error)")
        XCTAssertLessThan(error, Self.tolerance, "\(label) \(name)", file: file, line: line)
    }

    /// Runs one fixture encoder and compares every output the reference holds.
    private func checkEncoder(_ folder: String, reference name: String) throws -> CLIPTextModel {
        let model = try CLIPTextModel.load(directory: Fixtures.path(folder))
        let reference = try Fixtures.reference(name)
        let output = model(try tokenIDs(reference))
        XCTAssertEqual(output.hiddenStates.count, model.configuration.numHiddenLayers + 1)
        for (i, state) in output.hiddenStates.enumerated() {
            try assertClose(state, reference, "hidden_states.\(i)", folder)
        }
        try assertClose(output.lastHiddenState, reference, "last_hidden_state", folder)
        try assertClose(output.penultimateHiddenState, reference, "hidden_states.\(output.hiddenStates.count - 2)", folder)
        try assertClose(output.pooledOutput, reference, "pooled_output", folder)
        if reference.contains("text_embeds") {
            let embeds = try XCTUnwrap(output.textEmbeds, "\(folder) should project the pooled output")
            try assertClose(embeds, reference, "text_embeds", folder)
        } else {
            XCTAssertNil(output.textEmbeds)
        }
        return model
    }

    func testSD15TextEncoderMatchesTransformers() throws {
        let model = try checkEncoder("tiny-sd15/text_encoder", reference: "text_encoder_sd15")
        XCTAssertEqual(model.configuration.architecture, .textModel)
        XCTAssertEqual(model.configuration.hiddenAct, .quickGELU)
    }

    func testSDXLTextEncoderMatchesTransformers() throws {
        _ = try checkEncoder("tiny-sdxl/text_encoder", reference: "text_encoder_sdxl")
    }

    func testSDXLTextEncoder2WithProjectionMatchesTransformers() throws {
        let model = try checkEncoder("tiny-sdxl/text_encoder_2", reference: "text_encoder_sdxl_2")
        XCTAssertEqual(model.configuration.architecture, .textModelWithProjection)
        XCTAssertEqual(model.configuration.hiddenAct, .gelu)
    }

    /// `eos_token_id == 2` (old configs, e.g. the public SD1.5 one): pooled at argmax(ids).
    func testLegacyEOSTokenIDPoolsAtArgmax() throws {
        for (folder, name) in [("tiny-sd15/text_encoder", "text_encoder_sd15"), ("tiny-sdxl/text_encoder_2", "text_encoder_sdxl_2")] {
            let directory = Fixtures.path(folder)
            var configuration = try CLIPTextConfiguration(directory: directory)
            configuration.eosTokenID = 2
            let model = try CLIPTextModel(configuration: configuration,
                                          weights: SafetensorsFile(path: directory + "/model.safetensors"))
            let reference = try Fixtures.reference(name)
            try assertClose(model(try tokenIDs(reference)).pooledOutput, reference, "pooled_output_legacy", folder)
        }
    }

    /// Checkpoints saved by transformers 4 (the public SD repositories) prefix the plain text model's
    /// weights with `text_model.`; both layouts must load to the same model.
    func testLoadsTextModelPrefixedWeights() throws {
        let directory = Fixtures.path("tiny-sd15/text_encoder")
        let weights = try SafetensorsFile(path: directory + "/model.safetensors")
        XCTAssertFalse(weights.contains("text_model.final_layer_norm.weight"), "fixture layout changed")
        let prefixed = PrefixedCLIPWeights(base: weights, prefix: "text_model.")
        let model = try CLIPTextModel(configuration: try CLIPTextConfiguration(directory: directory), weights: prefixed)
        let reference = try Fixtures.reference("text_encoder_sd15")
        try assertClose(model(try tokenIDs(reference)).lastHiddenState, reference, "last_hidden_state", "prefixed")
    }

    func testConfigurationParsesFixture() throws {
        let configuration = try CLIPTextConfiguration(directory: Fixtures.path("tiny-sdxl/text_encoder_2"))
        XCTAssertEqual(configuration, CLIPTextConfiguration(
            architecture: .textModelWithProjection, hiddenSize: 32, intermediateSize: 72, numHiddenLayers: 3,
            numAttentionHeads: 4, maxPositionEmbeddings: 77, hiddenAct: .gelu, layerNormEpsilon: 1e-5,
            eosTokenID: 2513, projectionDim: 32, vocabSize: 2514))
    }

    /// The text encoder configs of the public SD1.5 and SDXL repositories (older transformers layouts).
    func testParsesPublicStableDiffusionConfigurations() throws {
        let sd15 = #"""
            {"_name_or_path": "openai/clip-vit-large-patch14", "architectures": ["CLIPTextModel"],
            "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu",
            "hidden_size": 768, "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 3072,
            "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
            "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768,
            "torch_dtype": "float32", "transformers_version": "4.22.0.dev0", "vocab_size": 49408}
            """#
        let sdxl2 = #"""
            {"architectures": ["CLIPTextModelWithProjection"], "attention_dropout": 0.0, "bos_token_id": 0,
            "dropout": 0.0, "eos_token_id": 2, "hidden_act": "gelu", "hidden_size": 1280, "initializer_factor": 1.0,
            "initializer_range": 0.02, "intermediate_size": 5120, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
            "model_type": "clip_text_model", "num_attention_heads": 20, "num_hidden_layers": 32, "pad_token_id": 1,
            "projection_dim": 1280, "torch_dtype": "float16", "transformers_version": "4.32.0.dev0", "vocab_size": 49408}
            """#
        let a = try CLIPTextConfiguration(json: try JSONDecoder().decode(JSONValue.self, from: Data(sd15.utf8)))
        XCTAssertEqual(a, CLIPTextConfiguration(architecture: .textModel, hiddenSize: 768, intermediateSize: 3072,
            numHiddenLayers: 12, numAttentionHeads: 12, hiddenAct: .quickGELU, eosTokenID: 2, projectionDim: 768))
        let b = try CLIPTextConfiguration(json: try JSONDecoder().decode(JSONValue.self, from: Data(sdxl2.utf8)))
        XCTAssertEqual(b, CLIPTextConfiguration(architecture: .textModelWithProjection, hiddenSize: 1280,
            intermediateSize: 5120, numHiddenLayers: 32, numAttentionHeads: 20, hiddenAct: .gelu, eosTokenID: 2,
            projectionDim: 1280))
    }

    func testConfigurationErrorsNameTheKey() throws {
        func error(_ json: String) -> String {
            do {
                _ = try CLIPTextConfiguration(json: try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8)),
                                              source: "text_encoder/config.json")
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        let activation = error(#"{"architectures": ["CLIPTextModel"], "hidden_act": "relu"}"#)
        XCTAssertTrue(activation.contains("hidden_act") && activation.contains("relu") && activation.contains("text_encoder/config.json"), activation)
        let architecture = error(#"{"architectures": ["T5EncoderModel"]}"#)
        XCTAssertTrue(architecture.contains("architectures") && architecture.contains("T5EncoderModel"), architecture)
        let heads = error(#"{"hidden_size": 30, "num_attention_heads": 4}"#)
        XCTAssertTrue(heads.contains("num_attention_heads"), heads)
        let type = error(#"{"num_hidden_layers": "three"}"#)
        XCTAssertTrue(type.contains("num_hidden_layers"), type)
    }

    func testWeightsDisagreeingWithConfigurationAreAnError() throws {
        let directory = Fixtures.path("tiny-sd15/text_encoder")
        var configuration = try CLIPTextConfiguration(directory: directory)
        configuration.vocabSize = 49408
        XCTAssertThrowsError(try CLIPTextModel(configuration: configuration,
                                               weights: SafetensorsFile(path: directory + "/model.safetensors"))) {
            XCTAssertTrue("\($0)".contains("token_embedding"), "\($0)")
        }
    }

    /// A config with fewer layers than the weights would silently drop layers; it must be an error.
    func testUnusedWeightsAreAnError() throws {
        let directory = Fixtures.path("tiny-sdxl/text_encoder_2")
        let weights = try SafetensorsFile(path: directory + "/model.safetensors")
        var configuration = try CLIPTextConfiguration(directory: directory)
        configuration.numHiddenLayers = 2
        XCTAssertThrowsError(try CLIPTextModel(configuration: configuration, weights: weights)) {
            XCTAssertTrue("\($0)".contains("text_model.encoder.layers.2."), "\($0)")
        }
        configuration = try CLIPTextConfiguration(directory: directory)
        configuration.architecture = .textModel
        XCTAssertThrowsError(try CLIPTextModel(configuration: configuration, weights: weights)) {
            XCTAssertTrue("\($0)".contains("text_projection.weight"), "\($0)")
        }
        configuration = try CLIPTextConfiguration(directory: directory)
        configuration.intermediateSize = 64
        XCTAssertThrowsError(try CLIPTextModel(configuration: configuration, weights: weights)) {
            XCTAssertTrue("\($0)".contains("mlp.fc1.weight"), "\($0)")
        }
    }

    /// The causal mask: a query sees only earlier positions, so later tokens never change earlier outputs.
    func testCausalAttentionIgnoresLaterTokens() throws {
        let model = try CLIPTextModel.load(directory: Fixtures.path("tiny-sd15/text_encoder"))
        var a = [Int](repeating: 2513, count: 77), b = a
        a[0] = 2512; b[0] = 2512
        a[1] = 320; b[1] = 320
        b[5] = 736
        let (outA, outB) = (model([a]).lastHiddenState, model([b]).lastHiddenState)
        let prefix = 5 * model.configuration.hiddenSize
        XCTAssertEqual(Array(outA.scalars[0..<prefix]), Array(outB.scalars[0..<prefix]))
        XCTAssertNotEqual(Array(outA.scalars[prefix..<(2 * prefix)]), Array(outB.scalars[prefix..<(2 * prefix)]))
    }
}

/// Presents a store's tensors under `prefix + name`.
private struct PrefixedCLIPWeights: TensorStore {
    let base: TensorStore
    let prefix: String
    var tensorNames: [String] { base.tensorNames.map { prefix + $0 } }
    func tensor(named name: String) throws -> Tensor {
        guard name.hasPrefix(prefix) else { throw SafetensorsError("no tensor named '\(name)'") }
        return try base.tensor(named: String(name.dropFirst(prefix.count)))
    }
}

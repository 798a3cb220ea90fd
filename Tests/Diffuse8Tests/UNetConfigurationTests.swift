import XCTest
@testable import Diffuse8

final class UNetConfigurationTests: XCTestCase {
    func testPublicSD15ConfigParses() throws {
        let c = try UNetConfiguration(contentsOf: Fixtures.path("configs/sd15-unet-config.json"))
        XCTAssertEqual(c.blockOutChannels, [320, 640, 1280, 1280])
        XCTAssertEqual(c.downBlockTypes, [.crossAttention, .crossAttention, .crossAttention, .plain])
        XCTAssertEqual(c.upBlockTypes, [.plain, .crossAttention, .crossAttention, .crossAttention])
        XCTAssertEqual(c.attentionHeads, [8, 8, 8, 8], "attention_head_dim 8 means 8 heads (diffusers' quirk)")
        XCTAssertEqual(c.crossAttentionDim, [768, 768, 768, 768])
        XCTAssertEqual(c.layersPerBlock, [2, 2, 2, 2])
        XCTAssertEqual(c.transformerLayersPerBlock, [1, 1, 1, 1])
        XCTAssertFalse(c.useLinearProjection)
        XCTAssertFalse(c.usesTextTimeEmbedding)
        XCTAssertEqual(c.normNumGroups, 32)
        XCTAssertEqual(c.timeEmbeddingDim, 1280)
        XCTAssertEqual(c.upBlockLayers(0), 3)
    }

    func testPublicSDXLConfigParses() throws {
        let c = try UNetConfiguration(contentsOf: Fixtures.path("configs/sdxl-unet-config.json"))
        XCTAssertEqual(c.blockOutChannels, [320, 640, 1280])
        XCTAssertEqual(c.downBlockTypes, [.plain, .crossAttention, .crossAttention])
        XCTAssertEqual(c.attentionHeads, [5, 10, 20])
        XCTAssertEqual(c.transformerLayersPerBlock, [1, 2, 10])
        XCTAssertEqual(c.crossAttentionDim, [2048, 2048, 2048])
        XCTAssertTrue(c.useLinearProjection)
        XCTAssertTrue(c.usesTextTimeEmbedding)
        XCTAssertEqual(c.additionTimeEmbedDim, 256)
        XCTAssertEqual(c.projectionClassEmbeddingsInputDim, 2816)
    }

    private func config(_ edit: (inout [String: JSONValue]) -> Void) throws -> UNetConfiguration {
        let data = try XCTUnwrap(FileManager.default.contents(atPath: Fixtures.path("tiny-sd15/unet/config.json")))
        var object = try XCTUnwrap(try JSONDecoder().decode(JSONValue.self, from: data).object)
        edit(&object)
        return try UNetConfiguration(json: .object(object))
    }

    private func assertRejects(_ key: String, _ value: JSONValue, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try config { $0[key] = value }, file: file, line: line) { error in
            let e = error as? ComponentConfigurationError
            XCTAssertEqual(e?.key, key, file: file, line: line)
            XCTAssertTrue("\(error)".contains(key), "\(error)", file: file, line: line)
        }
    }

    func testUnsupportedKeysAreRejectedByName() throws {
        XCTAssertNoThrow(try config { _ in })
        assertRejects("class_embed_type", .string("timestep"))
        assertRejects("time_cond_proj_dim", .number(256))
        assertRejects("resnet_time_scale_shift", .string("scale_shift"))
        assertRejects("only_cross_attention", .bool(true))
        assertRejects("dual_cross_attention", .bool(true))
        assertRejects("time_embedding_type", .string("fourier"))
        assertRejects("conv_in_kernel", .number(7))
        assertRejects("act_fn", .string("gelu"))
        assertRejects("attention_type", .string("gated"))
        assertRejects("addition_embed_type", .string("text"))
        assertRejects("encoder_hid_dim", .number(768))
        assertRejects("mid_block_type", .string("UNetMidBlock2DSimpleCrossAttn"))
        assertRejects("down_block_types", .array([.string("AttnDownBlock2D"), .string("DownBlock2D"), .string("DownBlock2D")]))
        assertRejects("transformer_layers_per_block", .array([.array([.number(1)]), .number(1), .number(1)]))
        assertRejects("attention_head_dim", .number(3))  // 16 channels are not divisible into 3 heads
        XCTAssertThrowsError(try config { $0["class_embed_type"] = .string("timestep") }) { error in
            XCTAssertTrue("\(error)".contains("class_embed_type"))
            XCTAssertTrue("\(error)".contains("\"timestep\""))
        }
    }

    func testTextTimeNeedsItsDimensions() {
        XCTAssertThrowsError(try config { $0["addition_embed_type"] = .string("text_time") }) { error in
            XCTAssertEqual((error as? ComponentConfigurationError)?.key, "addition_time_embed_dim")
        }
    }

    func testNumAttentionHeadsOverridesAttentionHeadDim() throws {
        let c = try config { $0["num_attention_heads"] = .array([.number(4), .number(8), .number(8)]) }
        XCTAssertEqual(c.attentionHeads, [4, 8, 8])
        XCTAssertEqual(try config { _ in }.attentionHeads, [2, 2, 2])
    }
}

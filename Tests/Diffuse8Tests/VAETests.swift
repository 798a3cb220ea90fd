import XCTest
@testable import Diffuse8

/// AutoencoderKL against diffusers 0.42.1 (FP32) on the fixture VAEs; references from `tools/reference/vae.py`.
final class VAETests: XCTestCase {
    static let tolerance = 1e-4

    private func assertClose(_ actual: Tensor, _ reference: SafetensorsFile, _ name: String, _ label: String,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try reference.tensor(named: name)
        XCTAssertEqual(actual.shape, expected.shape, "\(label) \(name) shape", file: file, line: line)
        let error = actual.relativeL2(to: expected)
        print("[VAE] \(label) \(name): relative L2 \(error)")
        XCTAssertLessThan(error, Self.tolerance, "\(label) \(name)", file: file, line: line)
    }

    private func checkDecode(_ vae: AutoencoderKL, _ name: String) throws {
        let reference = try Fixtures.reference(name)
        try assertClose(vae.decode(try reference.tensor(named: "latents")), reference, "decoded", name)
    }

    private func checkEncode(_ vae: AutoencoderKL, _ name: String) throws {
        let reference = try Fixtures.reference(name)
        let (mean, logVariance) = vae.encode(try reference.tensor(named: "image"))
        try assertClose(mean, reference, "latent_mean", name)
        try assertClose(logVariance, reference, "latent_logvar", name)
    }

    func testSD15DecodeMatchesDiffusers() throws {
        let vae = try AutoencoderKL.load(directory: Fixtures.path("tiny-sd15/vae"))
        XCTAssertEqual(vae.scalingFactor, 0.18215)
        XCTAssertEqual(vae.downscaleFactor, 8)
        try checkDecode(vae, "vae_sd15")
    }

    func testSD15EncodeMatchesDiffusers() throws {
        try checkEncode(try AutoencoderKL.load(directory: Fixtures.path("tiny-sd15/vae")), "vae_sd15")
    }

    func testSDXLDecodeMatchesDiffusers() throws {
        let vae = try AutoencoderKL.load(directory: Fixtures.path("tiny-sdxl/vae"))
        XCTAssertEqual(vae.scalingFactor, 0.13025)
        XCTAssertTrue(vae.configuration.forceUpcast)
        try checkDecode(vae, "vae_sdxl")
    }

    func testSDXLEncodeMatchesDiffusers() throws {
        try checkEncode(try AutoencoderKL.load(directory: Fixtures.path("tiny-sdxl/vae")), "vae_sdxl")
    }

    func testLatentDistributionModeAndSample() throws {
        let vae = try AutoencoderKL.load(directory: Fixtures.path("tiny-sd15/vae"))
        let reference = try Fixtures.reference("vae_sd15")
        let distribution = vae.latentDistribution(try reference.tensor(named: "image"))
        XCTAssertEqual(distribution.mode().scalars, distribution.mean.scalars)
        let noise = Tensor(shape: distribution.mean.shape, scalars: (0..<distribution.mean.count).map { Float($0 % 7) - 3 })
        let sample = distribution.sample(noise: noise)
        let std = distribution.standardDeviation
        for i in stride(from: 0, to: sample.count, by: 17) {
            XCTAssertEqual(sample.scalars[i], distribution.mean.scalars[i] + std.scalars[i] * noise.scalars[i], accuracy: 1e-5)
        }
    }

    /// Old checkpoints name the mid-block attention `query`/`key`/`value`/`proj_attn`; diffusers renames
    /// them on load, and so do we.
    func testLoadsLegacyAttentionNames() throws {
        let directory = Fixtures.path("tiny-sd15/vae")
        let weights = LegacyVAEAttentionNames(base: try SafetensorsFile(path: directory + "/diffusion_pytorch_model.safetensors"))
        XCTAssertTrue(weights.tensorNames.contains("decoder.mid_block.attentions.0.proj_attn.weight"))
        let vae = try AutoencoderKL(configuration: try VAEConfiguration(directory: directory), weights: weights)
        try checkDecode(vae, "vae_sd15")
    }

    func testConfigurationErrorsNameTheKey() throws {
        let fixture = try String(contentsOfFile: Fixtures.path("tiny-sd15/vae/config.json"), encoding: .utf8)
        func error(replacing old: String, with new: String) -> String {
            let json = fixture.replacingOccurrences(of: old, with: new)
            XCTAssertNotEqual(json, fixture, "fixture text '\(old)' not found")
            do {
                _ = try VAEConfiguration(json: try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8)), source: "vae/config.json")
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertNoThrow(try VAEConfiguration(json: try JSONDecoder().decode(JSONValue.self, from: Data(fixture.utf8))))
        let up = error(replacing: #""UpDecoderBlock2D",\#n    "UpDecoderBlock2D","#, with: #""AttnUpDecoderBlock2D",\#n    "UpDecoderBlock2D","#)
        XCTAssertTrue(up.contains("up_block_types") && up.contains("AttnUpDecoderBlock2D") && up.contains("vae/config.json"), up)
        let down = error(replacing: #""DownEncoderBlock2D",\#n    "DownEncoderBlock2D","#, with: #""AttnDownEncoderBlock2D",\#n    "DownEncoderBlock2D","#)
        XCTAssertTrue(down.contains("down_block_types"), down)
        let shift = error(replacing: #""shift_factor": null"#, with: #""shift_factor": 0.1159"#)
        XCTAssertTrue(shift.contains("shift_factor"), shift)
        let className = error(replacing: #""AutoencoderKL""#, with: #""AutoencoderTiny""#)
        XCTAssertTrue(className.contains("_class_name"), className)
        let groups = error(replacing: #""norm_num_groups": 4"#, with: #""norm_num_groups": 3"#)
        XCTAssertTrue(groups.contains("norm_num_groups"), groups)
        let activation = error(replacing: #""act_fn": "silu""#, with: #""act_fn": "gelu""#)
        XCTAssertTrue(activation.contains("act_fn"), activation)
    }

    /// The public SD1.5 VAE config predates `scaling_factor`, `force_upcast` and the quant-conv keys:
    /// diffusers' defaults apply.
    func testParsesPublicSD15Configuration() throws {
        let json = #"""
            {"_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu",
            "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
            "sample_size": 512,
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}
            """#
        let configuration = try VAEConfiguration(json: try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8)))
        XCTAssertEqual(configuration, VAEConfiguration(blockOutChannels: [128, 256, 512, 512], layersPerBlock: 2,
                                                       normNumGroups: 32, scalingFactor: 0.18215))
        XCTAssertEqual(configuration.downscaleFactor, 8)
    }

    func testOptionalConvsAndDefaults() throws {
        let configuration = try VAEConfiguration(json: try JSONDecoder().decode(JSONValue.self, from: Data(
            #"{"block_out_channels": [32, 64], "use_post_quant_conv": false, "mid_block_add_attention": false}"#.utf8)))
        XCTAssertFalse(configuration.usePostQuantConv)
        XCTAssertTrue(configuration.useQuantConv)
        XCTAssertFalse(configuration.midBlockAddAttention)
        XCTAssertEqual(configuration.normNumGroups, 32)
        XCTAssertEqual(configuration.downscaleFactor, 2)
        XCTAssertNil(configuration.latentsMean)
    }

    func testWeightsDisagreeingWithConfigurationAreAnError() throws {
        let directory = Fixtures.path("tiny-sd15/vae")
        let weights = try SafetensorsFile(path: directory + "/diffusion_pytorch_model.safetensors")
        var configuration = try VAEConfiguration(directory: directory)
        configuration.useQuantConv = false
        XCTAssertThrowsError(try AutoencoderKL(configuration: configuration, weights: weights)) {
            XCTAssertTrue("\($0)".contains("'quant_conv.weight'"), "\($0)")
        }
        configuration = try VAEConfiguration(directory: directory)
        configuration.midBlockAddAttention = false
        XCTAssertThrowsError(try AutoencoderKL(configuration: configuration, weights: weights)) {
            XCTAssertTrue("\($0)".contains("mid_block.attentions.0"), "\($0)")
        }
        configuration = try VAEConfiguration(directory: directory)
        configuration.blockOutChannels = [8, 16, 16, 16]
        XCTAssertThrowsError(try AutoencoderKL(configuration: configuration, weights: weights)) {
            XCTAssertTrue("\($0)".contains("down_blocks.1"), "\($0)")
        }
    }

    func testMissingWeightsNameTheTensor() throws {
        let directory = Fixtures.path("tiny-sd15/vae")
        var configuration = try VAEConfiguration(directory: directory)
        configuration.layersPerBlock = 2
        XCTAssertThrowsError(try AutoencoderKL(configuration: configuration,
                                               weights: SafetensorsFile(path: directory + "/diffusion_pytorch_model.safetensors"))) {
            XCTAssertTrue("\($0)".contains("resnets.1"), "\($0)")
        }
    }
}

/// Presents the mid-block attention weights under their pre-0.14 diffusers names.
private struct LegacyVAEAttentionNames: TensorStore {
    let base: TensorStore
    static let renames = [(".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")]

    var tensorNames: [String] { base.tensorNames.map(Self.legacy).sorted() }

    static func legacy(_ name: String) -> String {
        Self.renames.reduce(name) { $0.replacingOccurrences(of: $1.0, with: $1.1) }
    }

    func tensor(named name: String) throws -> Tensor {
        let modern = Self.renames.reduce(name) { $0.replacingOccurrences(of: $1.1, with: $1.0) }
        return try base.tensor(named: modern)
    }
}

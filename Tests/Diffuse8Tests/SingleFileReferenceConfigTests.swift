import Foundation
import XCTest
@testable import Diffuse8

/// Single-file checkpoints without a configuration folder: the shipped reference configurations
/// (`models/configs/<family>`) and CLIP vocabulary (`models/tokenizers/clip`) against what diffusers and transformers
/// make of them (`tools/reference/single_file_configs.py`), the family and shape checks on checkpoint headers, and the
/// whole path on the tiny fixtures against diffusers' `from_single_file`.
final class SingleFileReferenceConfigTests: XCTestCase {
    struct Reference: Decodable {
        struct Family: Decodable {
            let model_type: String
            let unet_from_ldm: JSONValue
            let vae_from_ldm: JSONValue
            let diffusers_tensor_counts: [String: Int]
            let shapes: [String: [Int]]
        }
        struct Tokenized: Decodable {
            struct Row: Decodable { let ids: [Int] }
            let rows: [Row]
        }
        let families: [String: Family]
        let scheduler_defaults: [String: JSONValue]
        let strings: [String]
        let tokenizers: [String: Tokenized]
    }

    static let reference: Reference = {
        let data = FileManager.default.contents(atPath: Fixtures.path("reference/single_file_configs.json"))!
        return try! JSONDecoder().decode(Reference.self, from: data)
    }()

    private var temporaries: [String] = []
    override func tearDown() {
        temporaries.forEach { FormatsTestFiles.remove($0) }
        unsetenv(ReferenceConfigurations.environmentVariable)
        unsetenv(CLIPVocabulary.environmentVariable)
    }

    private func family(_ name: String) throws -> Reference.Family { try XCTUnwrap(Self.reference.families[name], name) }

    // MARK: The shipped configurations against diffusers

    /// diffusers' converters derive the UNet and VAE configurations from the original v1-inference.yaml and
    /// sd_xl_base.yaml; the shipped ones must describe the same networks (every value that changes the math, with
    /// diffusers' defaults where a file leaves a key out).
    func testShippedUNetAndVAEConfigurationsEqualDiffusersConversionOfTheOriginalConfigs() throws {
        for family in [ModelFamily.stableDiffusion, .stableDiffusionXL] {
            let name = ReferenceConfigurations.name(of: family)
            let folder = try ReferenceConfigurations.folder(for: family)
            let reference = try self.family(name)
            XCTAssertEqual(try UNetConfiguration(contentsOf: folder + "/unet/config.json"),
                           try UNetConfiguration(json: reference.unet_from_ldm, source: "diffusers"), name)
            XCTAssertEqual(try VAEConfiguration(directory: folder + "/vae"),
                           try VAEConfiguration(json: reference.vae_from_ldm, source: "diffusers"), name)
        }
    }

    /// Both families train on the same schedule, the one diffusers' single-file loader starts from: every key the
    /// shipped scheduler settings share with it has its value, and the schedule's own keys are all there.
    func testShippedSchedulerSettingsHaveDiffusersTrainingSchedule() throws {
        for family in [ModelFamily.stableDiffusion, .stableDiffusionXL] {
            let path = try ReferenceConfigurations.folder(for: family) + "/scheduler/scheduler_config.json"
            let shipped = try XCTUnwrap(try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: URL(fileURLWithPath: path))).object)
            for key in ["beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "steps_offset"] {
                XCTAssertNotNil(shipped[key], "\(path): \(key)")
            }
            var compared = 0
            for (key, value) in Self.reference.scheduler_defaults {
                guard let mine = shipped[key] else { continue }
                XCTAssertEqual(mine, value, "\(path): \(key)")
                compared += 1
            }
            XCTAssertGreaterThanOrEqual(compared, 7, path)
        }
    }

    /// diffusers reads the family of a checkpoint shaped like the shipped configurations' models as the family the
    /// configurations are for; Diffuse8 reads the same family from that header, the shapes pass its check, and every
    /// key maps to a diffusers name (as many tensors per component as diffusers' models have).
    func testCheckpointShapedLikeTheReferenceModelsIsAccepted() throws {
        for (family, type) in [(ModelFamily.stableDiffusion, "v1"), (.stableDiffusionXL, "xl_base")] {
            let name = ReferenceConfigurations.name(of: family)
            let reference = try self.family(name)
            XCTAssertEqual(reference.model_type, type, name)
            let checkpoint = try SingleFileCheckpoint(path: try sparseCheckpoint(reference.shapes))
            XCTAssertEqual(checkpoint.family, family, name)
            let folder = try DiffusersFolder(path: try ReferenceConfigurations.folder(for: family))
            XCTAssertNoThrow(try checkpoint.checkShapes(against: folder, described: name, advice: ""), name)
            let unet = try UNetConfiguration(contentsOf: try folder.folder(of: "unet") + "/config.json")
            let vae = try VAEConfiguration(directory: try folder.folder(of: "vae"))
            let counts = reference.diffusers_tensor_counts
            XCTAssertEqual(try checkpoint.unetWeights(layersPerBlock: unet.layersPerBlock).tensorNames.count, counts["unet"], name)
            XCTAssertEqual(try checkpoint.vaeWeights(blocks: vae.blockOutChannels.count).tensorNames.count, counts["vae"], name)
            XCTAssertEqual(try checkpoint.textEncoderWeights(index: 0).tensorNames.count, counts["text_encoder"], name)
            if family == .stableDiffusionXL {
                XCTAssertEqual(try checkpoint.textEncoderWeights(index: 1).tensorNames.count, counts["text_encoder_2"], name)
            }
        }
    }

    /// The shipped tokenizer settings with the shipped vocabulary give transformers' ids (SDXL's tokenizer_2 pads
    /// with "!" and splits it out of prompts, as transformers does).
    func testShippedTokenizersMatchTransformers() throws {
        for folder in ["stable-diffusion-v1-5/tokenizer", "stable-diffusion-xl-base-1.0/tokenizer", "stable-diffusion-xl-base-1.0/tokenizer_2"] {
            let reference = try XCTUnwrap(Self.reference.tokenizers[folder], folder)
            let tokenizer = try CLIPVocabulary.locate().tokenizer(configDirectory: ReferenceConfigurations.root + "/" + folder)
            XCTAssertEqual(reference.rows.count, Self.reference.strings.count)
            for (string, row) in zip(Self.reference.strings, reference.rows) {
                XCTAssertEqual(tokenizer.tokenize(string).ids, row.ids, "\(folder): \(string.debugDescription.prefix(60))")
            }
        }
    }

    /// The shipped components fit together as the pipeline checks them (tokenizer ids within the embedding tables,
    /// text widths = cross-attention width, SDXL's pooled projection + time ids = the addition embedding's input),
    /// with the tokenizers built as the pipeline builds them: shipped vocabulary, each folder's settings.
    func testShippedComponentsFitTogether() throws {
        for family in [ModelFamily.stableDiffusion, .stableDiffusionXL] {
            let folder = try DiffusersFolder(path: try ReferenceConfigurations.folder(for: family))
            let names = family == .stableDiffusionXL ? [("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")] : [("tokenizer", "text_encoder")]
            let text = try names.map { tokenizer, encoder in
                PipelineCompatibility.TextSide(
                    tokenizer: try CLIPVocabulary.locate().tokenizer(configDirectory: try folder.folder(of: tokenizer)),
                    tokenizerFolder: try folder.folder(of: tokenizer),
                    configuration: try CLIPTextConfiguration(directory: try folder.folder(of: encoder)), encoderFolder: try folder.folder(of: encoder))
            }
            XCTAssertEqual(text.map(\.tokenizer.padTokenID), family == .stableDiffusionXL ? [49407, 0] : [49407])
            XCTAssertNoThrow(try PipelineCompatibility.check(
                family: family, text: text, unet: try UNetConfiguration(contentsOf: try folder.folder(of: "unet") + "/config.json"),
                unetFolder: try folder.folder(of: "unet"), vae: try VAEConfiguration(directory: try folder.folder(of: "vae")),
                vaeFolder: try folder.folder(of: "vae")), "\(family)")
        }
    }

    // MARK: Family selection and shape checks on hand-built headers

    /// A few keys decide the family, and with it the reference folder.
    func testFamilyDecidesTheReferenceConfigurations() throws {
        let sd = try SingleFileCheckpoint(path: try sparseCheckpoint([
            "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": [49408, 768]]))
        XCTAssertEqual(sd.family, .stableDiffusion)
        XCTAssertTrue(try StableDiffusionPipeline.configFolder(nil, for: sd).hasSuffix("/stable-diffusion-v1-5"))
        let xl = try SingleFileCheckpoint(path: try sparseCheckpoint([
            "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
            "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": [49408, 768],
            "conditioner.embedders.1.model.token_embedding.weight": [49408, 1280]]))
        XCTAssertEqual(xl.family, .stableDiffusionXL)
        XCTAssertTrue(try StableDiffusionPipeline.configFolder(nil, for: xl).hasSuffix("/stable-diffusion-xl-base-1.0"))
    }

    /// SD 2.x's UNet reads 1024-wide text hidden states; with an SD1.x text encoder in front it is detected as SD1.x,
    /// so the shape check must stop it, naming the key, both shapes and what the file probably is.
    func testSD2UNetWithSD1TextEncoderIsRejectedByShape() throws {
        var shapes = try family("stable-diffusion-v1-5").shapes
        let key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
        XCTAssertEqual(shapes[key], [320, 768])
        shapes[key] = [320, 1024]
        try assertRejected(shapes, family: .stableDiffusion, mentions: ["'\(key)'", "[320, 1024]", "[320, 768]", "cross_attention_dim 768", "SD 2.x"])
    }

    func testInpaintingUNetIsRejectedByShape() throws {
        var shapes = try family("stable-diffusion-v1-5").shapes
        shapes["model.diffusion_model.input_blocks.0.0.weight"] = [320, 9, 3, 3]
        try assertRejected(shapes, family: .stableDiffusion,
                           mentions: ["'model.diffusion_model.input_blocks.0.0.weight'", "[320, 9, 3, 3]", "[320, 4, 3, 3]", "inpainting"])
    }

    /// A distilled SDXL UNet with fewer transformer layers in the mid block than SDXL base has.
    func testSDXLWithFewerTransformerLayersIsRejectedNamingTheMissingKey() throws {
        let shapes = try family("stable-diffusion-xl-base-1.0").shapes.filter { !$0.key.hasPrefix("model.diffusion_model.middle_block.1.transformer_blocks.9.") }
        try assertRejected(shapes, family: .stableDiffusionXL,
                           mentions: ["'model.diffusion_model.middle_block.1.transformer_blocks.9.attn2.to_k.weight' is missing", "10 transformer layer"])
    }

    func testSDXLTextEncoderOfAnotherWidthIsRejected() throws {
        var shapes = try family("stable-diffusion-xl-base-1.0").shapes
        shapes["conditioner.embedders.1.model.token_embedding.weight"] = [49408, 1024]
        try assertRejected(shapes, family: .stableDiffusionXL,
                           mentions: ["'conditioner.embedders.1.model.token_embedding.weight'", "[49408, 1024]", "[49408, 1280]", "hidden_size 1280"])
    }

    /// The tiny fixture is SD1.x by its keys but far smaller than SD 1.5: without --config the pipeline says which
    /// tensor disagrees with the reference configuration and that --config is the way out.
    func testSmallSD1CheckpointWithoutConfigNamesTheFirstMismatch() throws {
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: Fixtures.path("single-file/tiny-sd15.safetensors"))) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("'model.diffusion_model.input_blocks.0.0.weight' has shape"), message)
            XCTAssertTrue(message.contains("[320, 4, 3, 3] is expected"), message)
            XCTAssertTrue(message.contains("stable-diffusion-v1-5"), message)
            XCTAssertTrue(message.contains("--config"), message)
        }
    }

    // MARK: The whole path without --config

    /// The pipeline finds the configurations and the vocabulary through the environment variables, exactly as it
    /// finds the shipped ones; with the tiny models' configurations there, the tiny checkpoints give the images
    /// diffusers' `from_single_file` gives.
    func testWithoutConfigFolderTheReferenceConfigurationsAreUsed() throws {
        let root = try FormatsTestFiles.make()
        temporaries.append(root)
        for (fixture, family) in [("tiny-sd15", ModelFamily.stableDiffusion), ("tiny-sdxl", .stableDiffusionXL)] {
            try copyConfigurations(of: Fixtures.path(fixture), to: root + "/" + ReferenceConfigurations.name(of: family))
        }
        setenv(ReferenceConfigurations.environmentVariable, root, 1)
        setenv(CLIPVocabulary.environmentVariable, Fixtures.path("tiny-sd15/tokenizer"), 1)
        let reference = try Fixtures.reference("single_file")
        let settings = reference.metadata
        for name in ["tiny-sd15", "tiny-sdxl"] {
            let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("single-file/\(name).safetensors"))
            XCTAssertTrue(pipeline.folder.path.hasPrefix(root), pipeline.folder.path)
            let request = GenerationRequest(
                prompt: settings["prompt"]!, negativePrompt: settings["negative_prompt"]!, steps: Int(settings["steps"]!)!,
                guidanceScale: Float(settings["guidance"]!)!, seed: UInt64(settings["seed"]!)!,
                width: Int(settings["width"]!)!, height: Int(settings["height"]!)!, scheduler: .euler)
            try Fixtures.assertMatches(try pipeline.generate(request), reference, key: name)
        }
    }

    func testMissingReferenceConfigurationsSayWhereTheyWereLookedFor() throws {
        let root = try FormatsTestFiles.make()
        temporaries.append(root)
        setenv(ReferenceConfigurations.environmentVariable, root, 1)
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: Fixtures.path("single-file/tiny-sdxl.safetensors"))) { error in
            XCTAssertTrue("\(error)".contains(root + "/stable-diffusion-xl-base-1.0/model_index.json"), "\(error)")
            XCTAssertTrue("\(error)".contains(ReferenceConfigurations.environmentVariable), "\(error)")
            XCTAssertTrue("\(error)".contains("--config"), "\(error)")
        }
    }

    func testMissingVocabularySaysWhereItLooked() throws {
        let root = try FormatsTestFiles.make()
        temporaries.append(root)
        try copyConfigurations(of: Fixtures.path("tiny-sd15"), to: root + "/stable-diffusion-v1-5")
        setenv(ReferenceConfigurations.environmentVariable, root, 1)
        setenv(CLIPVocabulary.environmentVariable, root + "/no-such-folder", 1)
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: Fixtures.path("single-file/tiny-sd15.safetensors"))) { error in
            XCTAssertTrue("\(error)".contains(root + "/no-such-folder/vocab.json"), "\(error)")
            XCTAssertTrue("\(error)".contains(CLIPVocabulary.environmentVariable), "\(error)")
        }
    }

    // MARK: Helpers

    private func assertRejected(_ shapes: [String: [Int]], family: ModelFamily, mentions: [String],
                                file: StaticString = #filePath, line: UInt = #line) throws {
        let checkpoint = try SingleFileCheckpoint(path: try sparseCheckpoint(shapes))
        XCTAssertEqual(checkpoint.family, family, file: file, line: line)
        let folder = try DiffusersFolder(path: try ReferenceConfigurations.folder(for: family))
        XCTAssertThrowsError(try checkpoint.checkShapes(against: folder, described: "the reference configurations",
                                                        advice: "give its diffusers folder with --config DIR"), file: file, line: line) { error in
            for text in mentions { XCTAssertTrue("\(error)".contains(text), "missing \(text) in: \(error)", file: file, line: line) }
        }
    }

    /// A safetensors file with these F16 tensors whose data is a hole (a sparse file): full-size SD headers cost
    /// no disk space and no time, and only headers are read here.
    private func sparseCheckpoint(_ shapes: [String: [Int]]) throws -> String {
        var header: [String: Any] = [:]
        var offset = 0
        for (name, shape) in shapes.sorted(by: { $0.key < $1.key }) {
            let bytes = shape.reduce(2, *)
            header[name] = ["dtype": "F16", "shape": shape, "data_offsets": [offset, offset + bytes]]
            offset += bytes
        }
        let json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        var length = UInt64(json.count).littleEndian
        let folder = try FormatsTestFiles.make()
        temporaries.append(folder)
        let path = folder + "/model.safetensors"
        var data = Data(bytes: &length, count: 8)
        data.append(json)
        try data.write(to: URL(fileURLWithPath: path))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: UInt64(data.count + offset))
        try handle.close()
        return path
    }

    /// The configuration files of a diffusers folder (no weights, no vocabulary): what a reference folder holds.
    private func copyConfigurations(of source: String, to destination: String) throws {
        let fm = FileManager.default
        let keep: Set<String> = ["model_index.json", "config.json", "scheduler_config.json", "tokenizer_config.json", "special_tokens_map.json"]
        for relative in try XCTUnwrap(fm.subpaths(atPath: source)) where keep.contains((relative as NSString).lastPathComponent) {
            let target = destination + "/" + relative
            try fm.createDirectory(atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try fm.copyItem(atPath: source + "/" + relative, toPath: target)
        }
    }
}

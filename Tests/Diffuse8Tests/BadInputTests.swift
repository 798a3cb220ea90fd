import Foundation
import XCTest
@testable import Diffuse8

/// Hostile or damaged model folders, configurations, tokenizer files, quantized folders and statistics files:
/// each must be refused when it is loaded with an error that names the file and the key (the expected wording
/// below is the specification), never crash, hang or be accepted silently.
final class BadInputTests: XCTestCase {
    private var scratch: String!

    override func setUpWithError() throws {
        scratch = try FormatsTestFiles.make()
    }

    override func tearDownWithError() throws {
        FormatsTestFiles.remove(scratch)
    }

    // MARK: Helpers

    /// A writable copy of fixture model `name`.
    private func copyOfFixture(_ name: String = "tiny-sd15") throws -> String {
        let copy = scratch + "/" + name
        try FileManager.default.copyItem(atPath: Fixtures.path(name), toPath: copy)
        return copy
    }

    /// Sets `key` of the JSON object in `path` to `value` (any JSON-serialisable value, NSNull for null).
    private func setJSON(_ path: String, _ key: String, _ value: Any) throws {
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        object[key] = value
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
    }

    /// Asserts that loading the pipeline in `folder` throws an error whose text contains every one of `words`.
    private func assertLoadFails(_ folder: String, mentioning words: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: folder), file: file, line: line) { error in
            let text = "\(error)"
            for word in words { XCTAssertTrue(text.contains(word), "expected '\(word)' in: \(text)", file: file, line: line) }
        }
    }

    // MARK: Configuration values

    func testVAEZeroGroupsIsAnErrorNamingTheKey() throws {
        let model = try copyOfFixture()
        try setJSON(model + "/vae/config.json", "norm_num_groups", 0)
        assertLoadFails(model, mentioning: ["vae/config.json", "norm_num_groups", "1...16384"])
    }

    func testHugeOrWronglyTypedSampleSizeIsAnError() throws {
        let model = try copyOfFixture()
        try setJSON(model + "/unet/config.json", "sample_size", 1e9)
        assertLoadFails(model, mentioning: ["unet/config.json", "sample_size", "1...512"])
        try setJSON(model + "/unet/config.json", "sample_size", "big")
        assertLoadFails(model, mentioning: ["sample_size", "\"big\""])
        try setJSON(model + "/unet/config.json", "sample_size", 1e300)  // past Int: must not trap in the conversion
        assertLoadFails(model, mentioning: ["sample_size"])
    }

    func testOutOfRangeConfigurationValuesAreErrors() throws {
        let cases: [(component: String, key: String, value: Any, words: [String])] = [
            ("unet", "block_out_channels", [16, 32, 1_000_000], ["block_out_channels", "1...16384"]),
            ("unet", "layers_per_block", 0, ["layers_per_block", "1...16"]),
            ("unet", "downsample_padding", 5, ["downsample_padding", "0...1"]),
            ("unet", "norm_eps", -1, ["norm_eps"]),
            ("unet", "transformer_layers_per_block", 100_000, ["transformer_layers_per_block"]),
            ("unet", "_class_name", "UNet3DConditionModel", ["_class_name", "UNet2DConditionModel"]),
            ("vae", "_class_name", "AutoencoderTiny", ["_class_name", "AutoencoderKL"]),
            ("vae", "out_channels", 2, ["out_channels"]),
            ("vae", "scaling_factor", 0, ["scaling_factor", "other than 0"]),
            ("vae", "latents_std", [1, 1, 0, 1], ["latents_std"]),
            ("text_encoder", "num_hidden_layers", 1e9, ["num_hidden_layers", "1...128"]),
            ("text_encoder", "max_position_embeddings", 1, ["max_position_embeddings", "2...4096"]),
            ("text_encoder", "vocab_size", "many", ["vocab_size", "an integer"]),
        ]
        for c in cases {
            let model = scratch + "/case-\(UUID().uuidString)"
            try FileManager.default.copyItem(atPath: Fixtures.path("tiny-sd15"), toPath: model)
            try setJSON(model + "/\(c.component)/config.json", c.key, c.value)
            assertLoadFails(model, mentioning: c.words + ["\(c.component)/config.json"])
        }
    }

    func testSchedulerStepsOffsetOutOfRange() throws {
        let config = try JSONDecoder().decode(JSONValue.self, from: Data(#"{"steps_offset": 1000000, "timestep_spacing": "leading"}"#.utf8))
        XCTAssertThrowsError(try DDIMScheduler(config: config, steps: 10)) { XCTAssertTrue("\($0)".contains("steps_offset"), "\($0)") }
        // In range on its own, but leading timesteps (9 × 100 + 150 = 1050) pass num_train_timesteps.
        let late = try JSONDecoder().decode(JSONValue.self, from: Data(#"{"steps_offset": 150, "timestep_spacing": "leading"}"#.utf8))
        XCTAssertThrowsError(try DDIMScheduler(config: late, steps: 10)) { XCTAssertTrue("\($0)".contains("outside 0..<1000"), "\($0)") }
        let huge = try JSONDecoder().decode(JSONValue.self, from: Data(#"{"num_train_timesteps": 1e12}"#.utf8))
        XCTAssertThrowsError(try EulerDiscreteScheduler(config: huge, steps: 10)) { XCTAssertTrue("\($0)".contains("num_train_timesteps"), "\($0)") }
        let badBeta = try JSONDecoder().decode(JSONValue.self, from: Data(#"{"beta_end": 1.5}"#.utf8))
        XCTAssertThrowsError(try EulerDiscreteScheduler(config: badBeta, steps: 10)) { XCTAssertTrue("\($0)".contains("beta_end"), "\($0)") }
    }

    func testRequestLimits() throws {
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"))
        for request in [GenerationRequest(prompt: "x", steps: 1_000_000), GenerationRequest(prompt: "x", width: 1 << 20),
                        GenerationRequest(prompt: "x", height: 1 << 40), GenerationRequest(prompt: "x", guidanceScale: .nan)] {
            XCTAssertThrowsError(try pipeline.validate(request))
        }
    }

    // MARK: Components that do not fit together

    func testTokenizerIdsBeyondTheEmbeddingAreRefusedAtLoad() throws {
        let model = try copyOfFixture()
        try setJSON(model + "/tokenizer/vocab.json", "zzzzzz</w>", 3000)  // the text encoder has 2514 rows
        assertLoadFails(model, mentioning: ["tokenizer", "3000", "vocab_size 2514"])
        try setJSON(model + "/tokenizer/vocab.json", "zzzzzz</w>", -5)
        assertLoadFails(model, mentioning: ["vocab.json", "has id -5"])
    }

    func testTextEncoderNarrowerThanCrossAttentionIsRefused() throws {
        let model = try copyOfFixture()
        try FileManager.default.removeItem(atPath: model + "/unet")
        try FileManager.default.copyItem(atPath: Fixtures.path("tiny-sdxl/unet"), toPath: model + "/unet")
        assertLoadFails(model, mentioning: ["cross_attention_dim 64", "text_encoder", "32 wide"])
    }

    func testVAELatentChannelsMustMatchTheUNet() throws {
        let unet = try UNetConfiguration(contentsOf: Fixtures.path("tiny-sd15/unet/config.json"))
        XCTAssertThrowsError(try PipelineCompatibility.check(family: .stableDiffusion, text: [], unet: unet, unetFolder: "u",
                                                             vae: VAEConfiguration(latentChannels: 8), vaeFolder: "v")) {
            XCTAssertTrue("\($0)".contains("latent_channels 8"), "\($0)")
            XCTAssertTrue("\($0)".contains("in_channels 4"), "\($0)")
        }
    }

    // MARK: Files that are not what they claim

    func testFIFOInPlaceOfAFileFailsInsteadOfBlocking() throws {
        for file in ["unet/diffusion_pytorch_model.safetensors", "vae/config.json", "tokenizer/vocab.json"] {
            let model = scratch + "/fifo-\(UUID().uuidString)"
            try FileManager.default.copyItem(atPath: Fixtures.path("tiny-sd15"), toPath: model)
            try FileManager.default.removeItem(atPath: model + "/" + file)
            XCTAssertEqual(mkfifo(model + "/" + file, 0o644), 0)
            assertLoadFails(model, mentioning: [file])
        }
        let fifo = scratch + "/weights.safetensors"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        XCTAssertThrowsError(try SafetensorsFile(path: fifo)) { XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)") }
    }

    func testDuplicateTensorNamesAreRefused() throws {
        let header = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\u0061":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) }
        bytes += Array(header.utf8) + [UInt8](repeating: 0, count: 8)
        let path = scratch + "/dup.safetensors"
        try FormatsTestFiles.write(bytes, to: path)
        XCTAssertThrowsError(try SafetensorsFile(path: path)) { error in
            XCTAssertEqual((error as? SafetensorsError)?.tensor, "a", "\(error)")
            XCTAssertTrue("\(error)".contains("more than once"), "\(error)")
        }
    }

    func testScalarWeightIsRefusedNamingTheTensor() throws {
        let model = try copyOfFixture()
        let path = model + "/vae/diffusion_pytorch_model.safetensors"
        try rewrite(path) { name, _ in name == "decoder.conv_in.weight" ? Tensor(shape: [], scalars: [1]) : nil }
        assertLoadFails(model, mentioning: ["decoder.conv_in.weight", "[]"])
    }

    /// Rewrites the safetensors file at `path`, replacing each tensor for which `replace` returns a value and
    /// adding `extra` tensors.
    private func rewrite(_ path: String, extra: [(String, Tensor)] = [], _ replace: (String, SafetensorsFile) throws -> Tensor?) throws {
        let file = try SafetensorsFile(path: path)
        var writer = SafetensorsWriter(metadata: file.metadata)
        for name in file.tensorNames {
            if let tensor = try replace(name, file) {
                try writer.add(name, tensor)
            } else {
                let entry = try file.entry(named: name)
                try writer.add(name, dtype: entry.dtype, shape: entry.shape, bytes: Array(try file.rawBytes(named: name)))
            }
        }
        for (name, tensor) in extra { try writer.add(name, tensor) }
        try writer.write(to: path + ".new")
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: path + ".new", toPath: path)
    }

    // MARK: Tokenizer

    func testLongWordTokenizesAndRoundTrips() throws {
        let tokenizer = try CLIPTokenizer(directory: Fixtures.path("tiny-sd15/tokenizer"))
        // 120 000 characters in one word: quadratic BPE took tens of seconds; this must stay fast and exact.
        let word = String(repeating: "abcde", count: 24_000)
        let ids = tokenizer.encode(word)
        XCTAssertEqual(tokenizer.decode(ids), word)
    }

    // MARK: Quantized folders

    /// A dynamic INT8 quantized folder of the tiny model, written by the library.
    private func quantizedFolder() throws -> String {
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"))
        var recipe = QuantizationRecipe()
        recipe.dynamic = true
        let quantized = try Quantizer.quantize(try pipeline.cpuUNet(), statistics: nil, recipe: recipe)
        let output = scratch + "/q-\(UUID().uuidString)"
        try QuantizedModelFolder.write(source: Fixtures.path("tiny-sd15"), quantized: quantized, to: output)
        return output
    }

    func testBadQuantizedScalesAreRefusedNamingTheTensor() throws {
        let layer = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
        let cases: [(extra: [(String, Tensor)], replace: (String) -> Tensor?, words: [String])] = [
            ([], { $0 == layer + ".weight_scale" ? Tensor(shape: [16], scalars: [Float](repeating: .nan, count: 16)) : nil },
             [layer + ".weight_scale", "nan"]),
            ([], { $0 == layer + ".weight_scale" ? Tensor(shape: [16], scalars: [Float](repeating: -1, count: 16)) : nil },
             [layer + ".weight_scale", "-1"]),
            ([], { $0 == layer + ".weight_scale" ? Tensor(shape: [16], scalars: [Float](repeating: 0, count: 16)) : nil },
             [layer + ".weight_scale", "above 0"]),
            ([(layer + ".input_amax", Tensor(shape: [1], scalars: [0]))], { _ in nil }, [layer + ".input_amax", "above 0"]),
            ([(layer + ".input_amax", Tensor(shape: [1], scalars: [.infinity]))], { _ in nil }, [layer + ".input_amax", "inf"]),
            ([(layer + ".smooth_scale", Tensor(shape: [3], scalars: [1, 1, 1]))], { _ in nil }, [layer + ".smooth_scale", "[16]"]),
            ([(layer + ".smooth_scale", Tensor(shape: [16], scalars: [Float](repeating: -2, count: 16)))], { _ in nil },
             [layer + ".smooth_scale", "-2"]),
        ]
        let folder = try quantizedFolder()
        let weights = folder + "/unet/diffusion_pytorch_model.safetensors"
        let original = try Data(contentsOf: URL(fileURLWithPath: weights))
        for c in cases {
            try original.write(to: URL(fileURLWithPath: weights))
            try rewrite(weights, extra: c.extra) { name, _ in c.replace(name) }
            assertLoadFails(folder, mentioning: c.words + ["diffusion_pytorch_model.safetensors"])
        }
    }

    func testScalarQuantizedWeightIsRefused() throws {
        let folder = try quantizedFolder()
        let weights = folder + "/unet/diffusion_pytorch_model.safetensors"
        let name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
        let file = try SafetensorsFile(path: weights)
        var writer = SafetensorsWriter(metadata: file.metadata)
        for n in file.tensorNames {
            let entry = try file.entry(named: n)
            if n == name {
                try writer.add(n, dtype: .i8, shape: [], bytes: [3])
            } else {
                try writer.add(n, dtype: entry.dtype, shape: entry.shape, bytes: Array(try file.rawBytes(named: n)))
            }
        }
        try writer.write(to: weights + ".new")
        try FileManager.default.removeItem(atPath: weights)
        try FileManager.default.moveItem(atPath: weights + ".new", toPath: weights)
        assertLoadFails(folder, mentioning: [name, "shape []"])
    }

    func testQuantizedFolderIsACopyNotALinkOfTheSource() throws {
        let folder = try quantizedFolder()
        for file in ["vae/config.json", "vae/diffusion_pytorch_model.safetensors", "tokenizer/vocab.json", "model_index.json"] {
            var source = stat(), copy = stat()
            XCTAssertEqual(stat(Fixtures.path("tiny-sd15/" + file), &source), 0)
            XCTAssertEqual(stat(folder + "/" + file, &copy), 0)
            XCTAssertFalse(source.st_dev == copy.st_dev && source.st_ino == copy.st_ino, "\(file) is shared with the source model")
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: folder + "/" + file)),
                           try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("tiny-sd15/" + file))))
        }
    }

    // MARK: Calibration statistics

    func testBadStatisticsAreRefused() throws {
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"))
        var options = CalibrationOptions(steps: 1)
        options.reservoirCapacity = 4
        let statistics = try Calibrator.calibrate(pipeline, prompts: ["a red circle"], options: options)
        let good = scratch + "/good.d8s"
        try CalibrationStatisticsFile.write(statistics, to: good)
        XCTAssertNoThrow(try CalibrationStatisticsFile.read(good))

        func variant(_ name: String, _ change: (inout CalibrationStatistics) -> Void) throws -> String {
            var s = statistics
            change(&s)
            let path = scratch + "/\(name).d8s"
            try CalibrationStatisticsFile.write(s, to: path)
            return path
        }
        let cases: [(String, (inout CalibrationStatistics) -> Void, [String])] = [
            ("nan", { $0.layers[0].amaxMax[0] = .nan }, ["L0.amax_*", "nan"]),
            ("zero-count", { $0.layers[1].batchCount[0] = 0 }, ["L1.", "batch_count is 0"]),
            ("negative-channel", { s in
                let i = s.layers.firstIndex { $0.channelAmax != nil }!
                s.layers[i].channelAmax![0] = -1
            }, ["channel_amax", "-1"]),
            ("shard", { $0.provenance.shards = [7] }, ["shards", "0..<1"]),
            ("steps", { $0.provenance.steps = 0 }, ["steps"]),
        ]
        for (name, change, words) in cases {
            let path = try variant(name, change)
            XCTAssertThrowsError(try CalibrationStatisticsFile.read(path), name) { error in
                for word in words + [path] { XCTAssertTrue("\(error)".contains(word), "expected '\(word)' in: \(error)") }
            }
        }
    }
}

import Diffuse8
import Diffuse8Server
import Foundation
import XCTest

/// Every command that takes a model, given a single-file checkpoint and no configuration folder. The tiny fixture
/// checkpoint is far smaller than SD 1.5, so its own configurations stand in for the reference ones through
/// `DIFFUSE8_REFERENCE_CONFIGS` (and its vocabulary through `DIFFUSE8_CLIP_VOCABULARY`), the way a user points the
/// tool at other reference files.
final class SingleFileCommandLineTests: ExecutableTestCase {
    private var checkpoint: String { Fixtures.path("single-file/tiny-sd15.safetensors") }
    private var environment: [String: String] = [:]

    override func setUpWithError() throws {
        try super.setUpWithError()
        let configs = scratch.path + "/configs/" + ReferenceConfigurations.name(of: .stableDiffusion)
        let fm = FileManager.default
        let source = Fixtures.path("tiny-sd15")
        // configuration files only, as in a reference folder (the vocabulary comes from DIFFUSE8_CLIP_VOCABULARY)
        for relative in try XCTUnwrap(fm.subpaths(atPath: source)) where relative.hasSuffix(".json") && !relative.hasSuffix("vocab.json") {
            try fm.createDirectory(atPath: (configs + "/" + relative as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try fm.copyItem(atPath: source + "/" + relative, toPath: configs + "/" + relative)
        }
        environment = [ReferenceConfigurations.environmentVariable: scratch.path + "/configs",
                       CLIPVocabulary.environmentVariable: Fixtures.path("tiny-sd15/tokenizer")]
        try "a red circle\na blue square\n".write(toFile: scratch.path + "/prompts.txt", atomically: true, encoding: .utf8)
    }

    private func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    func testGenerateCalibrateQuantizeEvalInspectWithoutConfig() throws {
        let s = scratch.path
        var r = try run(["generate", "--model", checkpoint, "a red circle", "--steps", "2", "-o", s + "/a.png"], environment: environment)
        XCTAssertEqual(r.status, 0, r.stderr)
        // A1111 names a checkpoint by its file name without the extension
        let png = String(decoding: try Data(contentsOf: URL(fileURLWithPath: s + "/a.png")), as: UTF8.self)
        XCTAssertTrue(png.contains("Size: 64x64, Model: tiny-sd15,"), "parameters chunk")
        r = try run(["calibrate", "--model", checkpoint, "--calib-prompts", s + "/prompts.txt", "--calib-steps", "2", "-o", s + "/all.d8s"],
                    environment: environment)
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["quantize", "--model", checkpoint, "--stats", s + "/all.d8s", "--format", "int8", "--level", "3", "-o", s + "/q8"],
                    environment: environment)
        XCTAssertEqual(r.status, 0, r.stderr)
        // a complete diffusers folder (tokenizer included), and nothing left beside it
        for file in ["model_index.json", "unet/quantization.json", "text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                     "tokenizer/vocab.json", "scheduler/scheduler_config.json"] {
            XCTAssertTrue(exists(s + "/q8/" + file), file)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: s).filter { $0.hasPrefix("q8") }, ["q8"])
        r = try run(["generate", "--model", s + "/q8", "a red circle", "--steps", "2", "-o", s + "/q8.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["eval", "--model", checkpoint, "--quantized", s + "/q8", "--prompts", s + "/prompts.txt", "--steps", "2", "-o", s + "/ev"],
                    environment: environment)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(exists(s + "/ev/report.json"))
        r = try run(["inspect", checkpoint], environment: environment)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("single-file SD1.x checkpoint"), r.stdout)
        XCTAssertTrue(r.stdout.contains("unet: diffusers UNet2DConditionModel"), r.stdout)
        XCTAssertTrue(r.stdout.contains("shapes: fit"), r.stdout)
    }

    /// `--config` replaces the reference configurations in calibrate and quantize too; the quantized folder then
    /// carries that folder's tokenizer files.
    func testCalibrateAndQuantizeWithConfigFolder() throws {
        let s = scratch.path, config = Fixtures.path("tiny-sd15")
        var r = try run(["calibrate", "--model", checkpoint, "--config", config, "--calib-prompts", s + "/prompts.txt", "--calib-steps", "1",
                         "-o", s + "/all.d8s"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["quantize", "--model", checkpoint, "--config", config, "--stats", s + "/all.d8s", "-o", s + "/q8"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: s + "/q8/tokenizer/vocab.json")),
                       try Data(contentsOf: URL(fileURLWithPath: config + "/tokenizer/vocab.json")))
        r = try run(["generate", "--model", s + "/q8", "a red circle", "--steps", "1", "-o", s + "/q8.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        // an existing output is refused before any work, and nothing is left beside it
        r = try run(["quantize", "--model", checkpoint, "--config", config, "--stats", s + "/all.d8s", "-o", s + "/q8"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("already exists"), r.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: s).filter { $0.hasPrefix("q8") }.sorted(), ["q8", "q8.png"])
    }

    /// With the shipped SD 1.5 configurations the tiny checkpoint does not fit: generate and inspect say which key.
    func testCheckpointOfAnotherArchitectureIsRefusedNamingTheKey() throws {
        for arguments in [["generate", "--model", checkpoint, "x", "-o", scratch.path + "/x.png"], ["inspect", checkpoint]] {
            let r = try run(arguments)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains("'model.diffusion_model.input_blocks.0.0.weight' has shape [16, 4, 3, 3] where [320, 4, 3, 3] is expected"),
                          r.stderr)
            XCTAssertTrue(r.stderr.contains("--config"), r.stderr)
        }
        XCTAssertFalse(exists(scratch.path + "/x.png"))
    }

    /// `serve --models-dir` lists checkpoints beside diffusers folders, and not the LoRAs that may sit there too.
    func testModelCatalogListsCheckpointsButNotLoRAs() throws {
        let dir = scratch.path + "/models"
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try fm.copyItem(atPath: checkpoint, toPath: dir + "/mine.safetensors")
        try fm.copyItem(atPath: Fixtures.path("tiny-sd15"), toPath: dir + "/folder")
        try fm.copyItem(atPath: Fixtures.path("../../models/examples/red-to-blue.safetensors"), toPath: dir + "/lora.safetensors")
        let catalog = try ModelCatalog.scan(directory: dir)
        XCTAssertEqual(catalog.entries.map(\.name), ["folder", "mine.safetensors"])
        XCTAssertEqual(catalog.entry(title: "mine")?.path, dir + "/mine.safetensors")
        XCTAssertEqual(catalog.entry(title: "mine.safetensors [0123abcd]")?.path, dir + "/mine.safetensors")
    }
}

import Foundation
import XCTest
@testable import Diffuse8

/// Single-file checkpoints (LDM/SGM key layout) against diffusers' `from_single_file` on the same files
/// (`tools/reference/single_file.py`): FP16 SD1.x, F8_E4M3-stored SD1.x UNet, BF16 SDXL.
final class SingleFileCheckpointTests: XCTestCase {
    private var temporary: String?
    override func tearDown() { FormatsTestFiles.remove(temporary) }

    func testSD15FP16CheckpointMatchesDiffusersFromSingleFile() throws {
        try checkImage("tiny-sd15", config: "tiny-sd15", family: .stableDiffusion)
    }

    func testSD15CheckpointWithFP8StoredUNetMatchesDiffusers() throws {
        try checkImage("tiny-sd15-fp8", config: "tiny-sd15", family: .stableDiffusion)
    }

    func testSDXLBF16CheckpointMatchesDiffusersFromSingleFile() throws {
        try checkImage("tiny-sdxl", config: "tiny-sdxl", family: .stableDiffusionXL)
    }

    /// Written out as a diffusers folder (what `quantize` does with a single file), the checkpoint still gives
    /// diffusers' `from_single_file` image; weights keep their stored type (F8_E4M3 becomes F16, exactly).
    func testCheckpointWrittenAsDiffusersFolderMatchesDiffusersFromSingleFile() throws {
        for (name, config, unetType) in [("tiny-sd15", "tiny-sd15", SafetensorsDType.f16), ("tiny-sd15-fp8", "tiny-sd15", .f16),
                                         ("tiny-sdxl", "tiny-sdxl", .bf16)] {
            let folder = try FormatsTestFiles.make()
            defer { FormatsTestFiles.remove(folder) }
            let checkpoint = try SingleFileCheckpoint(path: Fixtures.path("single-file/\(name).safetensors"))
            try checkpoint.writeDiffusersFolder(to: folder + "/model", configurationFolder: DiffusersFolder(path: Fixtures.path(config)), vocabulary: nil)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["model"], "no temporary folder left")
            let unet = try SafetensorsFile(path: folder + "/model/unet/diffusion_pytorch_model.safetensors")
            XCTAssertEqual(Set(try unet.tensorNames.map { try unet.entry(named: $0).dtype }), [unetType], name)
            try checkImage(name, directory: folder + "/model", config: nil)
        }
    }

    func testWritingOverAnExistingFolderIsRefused() throws {
        let folder = try FormatsTestFiles.make()
        defer { FormatsTestFiles.remove(folder) }
        let checkpoint = try SingleFileCheckpoint(path: Fixtures.path("single-file/tiny-sd15.safetensors"))
        XCTAssertThrowsError(try checkpoint.writeDiffusersFolder(to: folder, configurationFolder: DiffusersFolder(path: Fixtures.path("tiny-sd15")),
                                                                 vocabulary: nil)) { error in
            XCTAssertTrue("\(error)".contains("already exists"), "\(error)")
        }
    }

    private func checkImage(_ name: String, config: String, family: ModelFamily) throws {
        let path = Fixtures.path("single-file/\(name).safetensors")
        XCTAssertEqual(try SingleFileCheckpoint(path: path).family, family)
        try checkImage(name, directory: path, config: Fixtures.path(config))
    }

    private func checkImage(_ name: String, directory: String, config: String?) throws {
        let reference = try Fixtures.reference("single_file")
        let settings = reference.metadata
        let pipeline = try StableDiffusionPipeline(directory: directory, configDirectory: config)
        let request = GenerationRequest(
            prompt: settings["prompt"]!, negativePrompt: settings["negative_prompt"]!, steps: Int(settings["steps"]!)!,
            guidanceScale: Float(settings["guidance"]!)!, seed: UInt64(settings["seed"]!)!,
            width: Int(settings["width"]!)!, height: Int(settings["height"]!)!, scheduler: .euler)
        let result = try pipeline.generate(request)
        try Fixtures.assertMatches(result, reference, key: name)
    }

    // MARK: Bad input

    func testConfigFolderOfAnotherFamilyIsRejected() throws {
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: Fixtures.path("single-file/tiny-sd15.safetensors"),
                                                         configDirectory: Fixtures.path("tiny-sdxl"))) { error in
            XCTAssertTrue("\(error)".contains("SDXL"), "\(error)")
        }
    }

    func testFileOfUnknownFamilyNamesItsKeys() throws {
        let path = try write(["cheese.weight": [2], "toast.bias": [3]])
        XCTAssertThrowsError(try SingleFileCheckpoint(path: path)) { error in
            XCTAssertTrue("\(error)".contains("'cheese.weight'"), "\(error)")
            XCTAssertTrue("\(error)".contains("not a Stable Diffusion checkpoint"), "\(error)")
        }
    }

    func testLoRAGivenAsModelIsRecognised() throws {
        let path = try write(["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [4, 8]])
        XCTAssertThrowsError(try SingleFileCheckpoint(path: path)) { error in
            XCTAssertTrue("\(error)".contains("is a LoRA"), "\(error)")
        }
    }

    func testUnexpectedKeysAreListed() throws {
        let path = try copyOfCheckpoint("tiny-sd15", dropping: nil, adding: "model.diffusion_model.extra_head.weight")
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: path, configDirectory: Fixtures.path("tiny-sd15"))) { error in
            XCTAssertTrue("\(error)".contains("'model.diffusion_model.extra_head.weight'"), "\(error)")
            XCTAssertTrue("\(error)".contains("unexpected key"), "\(error)")
        }
    }

    func testMissingKeyIsNamed() throws {
        let path = try copyOfCheckpoint("tiny-sd15", dropping: "model.diffusion_model.input_blocks.1.0.in_layers.2.weight", adding: nil)
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: path, configDirectory: Fixtures.path("tiny-sd15"))) { error in
            // diffusers name of the missing tensor, and the prefix of the file's keys
            XCTAssertTrue("\(error)".contains("down_blocks.0.resnets.0.conv1.weight"), "\(error)")
            XCTAssertTrue("\(error)".contains("model.diffusion_model."), "\(error)")
        }
    }

    func testSD2CheckpointIsRejectedWithItsFamily() throws {
        let path = try write(["model.diffusion_model.input_blocks.0.0.weight": [4], "cond_stage_model.model.token_embedding.weight": [4]])
        XCTAssertThrowsError(try SingleFileCheckpoint(path: path)) { error in
            XCTAssertTrue("\(error)".contains("SD 2.x"), "\(error)")
        }
    }

    /// The SDXL refiner has only the OpenCLIP encoder, as `conditioner.embedders.0.model.*` (diffusers' `xl_refiner`
    /// key); without the check it would pass for neither family's layout.
    func testSDXLRefinerIsRejectedWithItsName() throws {
        let path = try write(["model.diffusion_model.input_blocks.0.0.weight": [4],
                              "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias": [4]])
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: path)) { error in
            XCTAssertTrue("\(error)".contains("SDXL refiner"), "\(error)")
            XCTAssertTrue("\(error)".contains("not supported"), "\(error)")
        }
    }

    /// Files with UNet keys but no text encoder of either family (a UNet-only extract) say what was expected.
    func testCheckpointWithoutTextEncoderSaysWhatWasExpected() throws {
        let path = try write(["model.diffusion_model.input_blocks.0.0.weight": [4], "first_stage_model.encoder.conv_in.weight": [4]])
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: path)) { error in
            XCTAssertTrue("\(error)".contains("no text encoder of a known family"), "\(error)")
            XCTAssertTrue("\(error)".contains("cond_stage_model.transformer.*"), "\(error)")
        }
    }

    // MARK: Helpers

    private func write(_ tensors: [String: [Int]]) throws -> String {
        let file = try FormatsTestFiles.zeros(tensors, name: "model.safetensors")
        temporary = file.folder
        return file.path
    }

    private func copyOfCheckpoint(_ name: String, dropping: String?, adding: String?) throws -> String {
        let source = try SafetensorsFile(path: Fixtures.path("single-file/\(name).safetensors"))
        var writer = SafetensorsWriter()
        for tensor in source.tensorNames where tensor != dropping {
            let entry = try source.entry(named: tensor)
            try writer.add(tensor, dtype: entry.dtype, shape: entry.shape, bytes: Array(try source.rawBytes(named: tensor)))
        }
        if let adding { try writer.add(adding, Tensor(zeros: [2])) }
        let folder = try FormatsTestFiles.make()
        temporary = folder
        let path = folder + "/model.safetensors"
        try writer.write(to: path)
        return path
    }
}

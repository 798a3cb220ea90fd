import Foundation
import XCTest
import Diffuse8

/// End-to-end checks of the `diffuse8` executable: bad input gives a clear message on stderr, a non-zero
/// exit status and no output file (an existing file is left as it was).
final class CommandLineTests: ExecutableTestCase {
    private var tinyModel: String { Fixtures.path("tiny-sd15") }

    func testGenerateWritesPNGWithA1111Parameters() throws {
        let output = scratch.appendingPathComponent("ok.png").path
        let result = try run(["generate", "a red circle", "--model", tinyModel, "--steps", "2", "--seed", "7",
                              "--negative-prompt", "blue", "-o", output])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stderr.contains("step 2/2"), "progress on stderr: \(result.stderr)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: output))
        XCTAssertEqual(Array(bytes.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let text = String(decoding: bytes, as: UTF8.self)
        XCTAssertTrue(text.contains("parameters\0a red circle\nNegative prompt: blue\nSteps: 2, Sampler: Euler, CFG scale: 7.5, Seed: 7, Size: 64x64"), "A1111 parameters chunk")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0 != "ok.png" }
        XCTAssertEqual(leftovers, [], "no temporary files left behind")
    }

    /// `--device cuda` without a GPU (CI): a non-zero exit that says what is missing (the driver library and where it
    /// looked, or the device), no file.
    func testCUDAWithoutGPUFailsClearly() throws {
        if (try? CUDAKernels()) != nil { throw XCTSkip("a CUDA GPU is present; CUDAPipelineTests cover the GPU path") }
        let output = scratch.appendingPathComponent("gpu.png").path
        let result = try run(["generate", "x", "--model", tinyModel, "--steps", "1", "--device", "cuda", "-o", output])
        XCTAssertNotEqual(result.status, 0)
        // Without the driver library the message lists every path tried; with a driver but no device it says so.
        XCTAssertTrue((result.stderr.contains("libcuda") && result.stderr.contains("Looked in")) || result.stderr.contains("CUDA"),
                      result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
        let cpuOnly = try run(["generate", "x", "--model", tinyModel, "--precision", "bf16", "-o", output])
        XCTAssertNotEqual(cpuOnly.status, 0)
        XCTAssertTrue(cpuOnly.stderr.contains("--precision applies to --device cuda"), cpuOnly.stderr)
    }

    func testSizeNotMultipleOfEightFailsWithoutOutput() throws {
        let output = scratch.appendingPathComponent("bad.png").path
        let result = try run(["generate", "x", "--model", tinyModel, "--width", "100", "-o", output])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("multiple of 8"), result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
    }

    func testUnwritableOutputFolderFailsBeforeAnyWork() throws {
        let result = try run(["generate", "x", "--model", tinyModel, "-o", scratch.path + "/missing/out.png"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("does not exist"), result.stderr)
        XCTAssertFalse(result.stderr.contains("step 1/"), "failed before generating")
    }

    func testMissingComponentIsNamed() throws {
        let model = scratch.appendingPathComponent("model")
        try FileManager.default.copyItem(atPath: tinyModel, toPath: model.path)
        try FileManager.default.removeItem(at: model.appendingPathComponent("vae"))
        let output = scratch.appendingPathComponent("out.png").path
        let result = try run(["generate", "x", "--model", model.path, "--steps", "1", "-o", output])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("vae"), result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output))
    }

    func testUnsupportedConfigValueIsNamed() throws {
        let model = scratch.appendingPathComponent("model")
        try FileManager.default.copyItem(atPath: tinyModel, toPath: model.path)
        let config = model.appendingPathComponent("unet/config.json")
        var json = try String(contentsOf: config, encoding: .utf8)
        json = json.replacingOccurrences(of: "\"class_embed_type\": null", with: "\"class_embed_type\": \"timestep\"")
        try json.write(to: config, atomically: true, encoding: .utf8)
        let result = try run(["generate", "x", "--model", model.path, "--steps", "1", "-o", scratch.path + "/o.png"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("class_embed_type"), result.stderr)
    }

    func testTruncatedWeightsAreNamedAndExistingOutputSurvives() throws {
        let model = scratch.appendingPathComponent("model")
        try FileManager.default.copyItem(atPath: tinyModel, toPath: model.path)
        let weights = model.appendingPathComponent("unet/diffusion_pytorch_model.safetensors")
        let data = try Data(contentsOf: weights)
        try data.prefix(data.count / 2).write(to: weights)
        let output = scratch.appendingPathComponent("existing.png")
        try Data("keep me".utf8).write(to: output)
        let result = try run(["generate", "x", "--model", model.path, "--steps", "1", "-o", output.path])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("diffusion_pytorch_model.safetensors"), result.stderr)
        XCTAssertEqual(try Data(contentsOf: output), Data("keep me".utf8))
    }

    func testUnknownSchedulerListsTheChoices() throws {
        let result = try run(["generate", "x", "--model", tinyModel, "--scheduler", "heun", "-o", scratch.path + "/o.png"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("dpm++2m-karras"), result.stderr)
    }
}

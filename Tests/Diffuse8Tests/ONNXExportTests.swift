import Foundation
import XCTest
import Diffuse8

/// `diffuse8 export-onnx` against independent references: `onnx.checker.check_model(full_check=True)` and
/// onnxruntime (CPU) executing the exported graph on the same inputs as the Swift UNet (`tools/onnx/run_onnx.py`).
/// The Python tools come from `.ci/run` (DIFFUSE8_ONNX_PYTHON); without them these tests skip and say why.
final class ONNXExportTests: ExecutableTestCase {
    private static let repositoryRoot = Fixtures.root + "/../.."
    private static let runner = repositoryRoot + "/tools/onnx/run_onnx.py"

    /// The Python that has onnx and onnxruntime: DIFFUSE8_ONNX_PYTHON, else the venv `.ci/run` makes, else python3.
    private static let python: Result<String, Error> = {
        let environment = ProcessInfo.processInfo.environment["DIFFUSE8_ONNX_PYTHON"] ?? ""
        let candidates = [environment, repositoryRoot + "/.build/onnx-venv/bin/python", "/usr/bin/python3", "/usr/local/bin/python3"]
            .filter { !$0.isEmpty && FileManager.default.isExecutableFile(atPath: $0) }
        for candidate in candidates {
            if let r = try? RunningProcess(executable: candidate, arguments: [runner, "--probe"], environment: [:]).finish(), r.status == 0 {
                return .success(candidate)
            }
        }
        return .failure(XCTSkip("onnx and onnxruntime are not importable by any of \(candidates) (.ci/run installs them into .build/onnx-venv; or set DIFFUSE8_ONNX_PYTHON)"))
    }()

    private func pythonWithONNX() throws -> String { try Self.python.get() }

    /// Runs the checker and onnxruntime on `model` with `inputs`; returns the graph's outputs.
    private func onnxRuntime(_ model: String, _ inputs: [String: Tensor], checkOnly: Bool = false) throws -> [String: Tensor] {
        let python = try pythonWithONNX()
        let inputPath = scratch.path + "/inputs.safetensors", outputPath = scratch.path + "/outputs.safetensors"
        var writer = SafetensorsWriter()
        for (name, t) in inputs { try writer.add(name, t) }
        try writer.write(to: inputPath)
        let r = try RunningProcess(executable: python, arguments: [Self.runner, model, inputPath, outputPath, "--threads", "2"] + (checkOnly ? ["--check-only"] : []),
                               environment: [:])
        let result = r.finish()
        guard result.status == 0 else { throw ONNXRunFailure(description: "run_onnx.py failed on \(model): \(result.stderr.suffix(4000))") }
        XCTAssertTrue(result.stdout.contains("\"checker\": \"ok\""), result.stdout)
        if checkOnly { return [:] }
        let file = try SafetensorsFile(path: outputPath)
        return Dictionary(uniqueKeysWithValues: try file.tensorNames.map { ($0, try file.tensor(named: $0)) })
    }

    private func export(_ model: String, _ extra: [String] = []) throws -> String {
        let output = scratch.path + "/unet.onnx"
        try? FileManager.default.removeItem(atPath: output)
        let r = try run(["export-onnx", model, "-o", output] + extra)
        XCTAssertEqual(r.status, 0, r.stderr)
        return output
    }

    /// Inputs for the UNet of `unet`: batch 2 with two timesteps, an H×W latent and a 7-token context.
    private func inputs(_ unet: UNet2DConditionModel, height: Int, width: Int, batch: Int = 2, seed: UInt64 = 1) -> [String: Tensor] {
        let c = unet.configuration
        var g = TorchGenerator(seed: seed)
        var x: [String: Tensor] = [
            "sample": g.randn([batch, c.inChannels, height, width]),
            "timestep": Tensor(shape: [batch], scalars: [981, 21, 500, 1].prefix(batch).map { $0 }),
            "encoder_hidden_states": g.randn([batch, 7, c.crossAttentionDim[0]]),
        ]
        if let p = unet.additionTimeProjection, let w = c.projectionClassEmbeddingsInputDim {
            x["text_embeds"] = g.randn([batch, w - 6 * p.channels])
            x["time_ids"] = Tensor(shape: [batch, 6], scalars: (0..<batch).flatMap { _ in [64, 48, 0, 0, 64, 48] as [Float] })
        }
        return x
    }

    private func swiftOutput(_ unet: UNet2DConditionModel, _ x: [String: Tensor]) throws -> Tensor {
        try unet.evaluate(sample: x["sample"]!, timesteps: x["timestep"]!.scalars, encoderHiddenStates: x["encoder_hidden_states"]!,
                          textEmbeds: x["text_embeds"], timeIds: x["time_ids"])
    }

    /// Exports `model`, runs it in onnxruntime and returns the relative L2 distance to the Swift UNet.
    private func compare(_ model: String, height: Int, width: Int, batch: Int = 2, extra: [String] = []) throws -> Double {
        _ = try pythonWithONNX()
        let onnx = try export(model, extra)
        let unet = try QuantizedModelFolder.loadUNet(directory: model + "/unet")
        let x = inputs(unet, height: height, width: width, batch: batch)
        let expected = try swiftOutput(unet, x)
        let got = try XCTUnwrap(try onnxRuntime(onnx, x)["out_sample"])
        XCTAssertEqual(got.shape, expected.shape)
        return got.relativeL2(to: expected)
    }

    // MARK: FP32 plain export vs the Swift UNet

    func testFP32ExportOfTinySD15MatchesSwift() throws {
        let error = try compare(Fixtures.path("tiny-sd15"), height: 16, width: 24)
        XCTAssertLessThanOrEqual(error, 1e-4)
        // Other batch and an odd latent size (diffusers' upsample_size path) through the same graph.
        let odd = try compare(Fixtures.path("tiny-sd15"), height: 9, width: 13, batch: 1)
        XCTAssertLessThanOrEqual(odd, 1e-4)
        print("onnx fp32 tiny-sd15: relative L2 \(error) (16×24, batch 2), \(odd) (9×13, batch 1)")
    }

    func testFP32ExportOfTinySDXLMatchesSwift() throws {
        let error = try compare(Fixtures.path("tiny-sdxl"), height: 16, width: 16)
        XCTAssertLessThanOrEqual(error, 1e-4)
        print("onnx fp32 tiny-sdxl: relative L2 \(error)")
    }

    func testFP32ExportOfTheDefaultModelMatchesSwift() throws {
        let error = try compare(Self.repositoryRoot + "/models/default", height: 32, width: 32)
        XCTAssertLessThanOrEqual(error, 1e-4)
        print("onnx fp32 default model: relative L2 \(error)")
    }

    /// External data file and FP16: the checker on the external-data path passes, onnxruntime runs it, and the
    /// result is FP16-close to the Swift FP32 UNet.
    func testFP16ExportWithExternalData() throws {
        _ = try pythonWithONNX()
        let model = Fixtures.path("tiny-sdxl")
        let onnx = try export(model, ["--precision", "fp16", "--external-data"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: onnx + ".data"))
        let modelSize = try FileManager.default.attributesOfItem(atPath: onnx)[.size] as! Int
        let dataSize = try FileManager.default.attributesOfItem(atPath: onnx + ".data")[.size] as! Int
        XCTAssertGreaterThan(dataSize, modelSize)
        let unet = try QuantizedModelFolder.loadUNet(directory: model + "/unet")
        let x = inputs(unet, height: 16, width: 16)
        let got = try XCTUnwrap(try onnxRuntime(onnx, x)["out_sample"])
        let error = got.relativeL2(to: try swiftOutput(unet, x))
        XCTAssertLessThan(error, 1e-2)  // FP16 weights and activations: ~1e-3 expected
        print("onnx fp16 tiny-sdxl (external data): relative L2 \(error) to Swift FP32")
    }
}

private struct ONNXRunFailure: Error, CustomStringConvertible {
    let description: String
}

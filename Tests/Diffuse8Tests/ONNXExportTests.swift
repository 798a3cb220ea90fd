import Foundation
import XCTest
import Diffuse8
import Diffuse8ONNX

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
    private func onnxRuntime(_ model: String, _ inputs: [String: Tensor], checkOnly: Bool = false, layerIO: Bool = false) throws -> [String: Tensor] {
        let python = try pythonWithONNX()
        let inputPath = scratch.path + "/inputs.safetensors", outputPath = scratch.path + "/outputs.safetensors"
        var writer = SafetensorsWriter()
        for (name, t) in inputs { try writer.add(name, t) }
        try writer.write(to: inputPath)
        let r = try RunningProcess(executable: python, arguments: [Self.runner, model, inputPath, outputPath, "--threads", "2"] + (checkOnly ? ["--check-only"] : []) + (layerIO ? ["--layer-io"] : []),
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

extension ONNXExportTests {
    /// A quantized copy of tiny-sd15 written by the library's `quantize` path (2-step calibration on 4 prompts).
    private func quantizedFolder(_ configure: (inout QuantizationRecipe) -> Void, name: String) throws -> String {
        let source = Fixtures.path("tiny-sd15")
        let pipeline = try StableDiffusionPipeline(directory: source)
        var options = CalibrationOptions(steps: 2)
        options.reservoirCapacity = 16
        let stats = try Calibrator.calibrate(pipeline, prompts: ["a red circle", "a blue square", "a green triangle", "a yellow star"], options: options)
        var recipe = QuantizationRecipe()
        configure(&recipe)
        let output = scratch.path + "/" + name
        try QuantizedModelFolder.write(source: source, quantized: try Quantizer.quantize(pipeline.unet!, statistics: recipe.dynamic ? nil : stats, recipe: recipe),
                                       to: output)
        return output
    }

    /// The quantized export against the Swift simulation of the same folder. Both compute the same Q/DQ formulas
    /// (round half to even, saturation, x / scale), but their float sums run in different orders (~1e-7 apart);
    /// where a sum lands next to a rounding boundary the two pick neighbouring codes, and each of the ~170 quantized
    /// layers turns the small differences it receives into such code flips, so the difference grows through the
    /// network (one flip moves a 12k-element layer output by ~2e-4 relative L2). The bound is therefore measured,
    /// not guessed: the simulation's own response to a perturbation of its inputs by a few ulps (relative noise
    /// 8·2⁻²³·N(0, 1), the size of reordering differences), max of 3 draws — the rounding floor. The export must
    /// stay within 3× that floor, and well below the quantization error itself (distance to the FP32 UNet).
    private func compareQuantized(_ folder: String, label: String, opset: Int = 19) throws {
        let onnx = try export(folder, ["--opset", String(opset)])
        let unet = try QuantizedModelFolder.loadUNet(directory: folder + "/unet")
        let x = inputs(unet, height: 16, width: 24)
        let expected = try swiftOutput(unet, x)
        let ort = try onnxRuntime(onnx, x, layerIO: true)
        let got = try XCTUnwrap(ort["out_sample"])
        let error = got.relativeL2(to: expected)

        // Layer by layer, on onnxruntime's own inputs: the same input gives the same Q/DQ codes, so only the
        // order of the float sums differs (~1e-7).
        var worstLayer = (name: "", error: 0.0), layers = 0
        func check(_ name: String, _ q: QuantizedLayer, _ fullPrecision: (Tensor) -> Tensor) throws {
            let input = try XCTUnwrap(ort["in:" + name], "no input of \(name) in the graph"), output = try XCTUnwrap(ort["out:" + name])
            let e = output.relativeL2(to: fullPrecision(q.quantizedInput(input)))
            if e > worstLayer.error { worstLayer = (name, e) }
            layers += 1
        }
        for l in unet.linearLayers { if let q = l.quantization { try check(l.name, q, l.fullPrecision) } }
        for c in unet.convolutionLayers { if let q = c.quantization { try check(c.name, q, c.fullPrecision) } }
        XCTAssertGreaterThan(layers, 0)
        XCTAssertLessThanOrEqual(worstLayer.error, 1e-5, worstLayer.name)

        // FP8 attention: onnxruntime's attention output vs the simulation's FP8 attention of its Q, K, V. Their softmax
        // `exp`s differ by an ulp, so now and then a probability next to an FP8 rounding boundary takes the neighbouring
        // code: one output row (one head of one query) then moves by that probability's FP8 step times V. Every other
        // row must agree to FP32 rounding (1e-5); at most 2 rows per module, or 1 %, may differ, and the whole output by
        // at most 1/5 of what rounding the probabilities to FP8 changes in the same attention (a wrong scale, saturation
        // or Q/DQ placement would move every row, by about that much).
        var worstAttention = 0.0
        for a in Quantizer.attentionModules(unet) where a.usesFP8Attention {
            func projected(_ l: Linear) throws -> Tensor {
                var y = try XCTUnwrap(ort["out:" + l.name])
                let scale = QuantizedFormat.fp8.scale(forAmax: try XCTUnwrap(l.quantization?.outputAmax))
                y.scalars.withUnsafeMutableBufferPointer { QuantizedFormat.fp8.fakeQuantize($0.baseAddress!, count: $0.count, scale: scale) }
                return y
            }
            let q = try projected(a.query), k = try projected(a.key), v = try projected(a.value)
            let simulated = FP8AttentionSimulation.attention(query: q, key: k, value: v, heads: a.heads, probabilityAmax: a.fp8ProbabilityAmax)
            let got = try XCTUnwrap(ort["in:" + a.output.name])
            XCTAssertEqual(got.shape, simulated.shape, a.output.name)
            let error = got.relativeL2(to: simulated)
            worstAttention = max(worstAttention, error)
            let probabilityRounding = CPUKernels.attention(query: q, key: k, value: v, heads: a.heads).relativeL2(to: simulated)
            XCTAssertLessThanOrEqual(error, probabilityRounding / 5, "\(a.output.name): FP8 probability rounding moves it by \(probabilityRounding)")
            let width = a.heads > 0 ? got.shape.last! / a.heads : 1, rows = got.count / max(width, 1)
            var differingRows = 0
            for r in 0..<rows {
                var difference = 0.0, norm = 0.0
                for c in (r * width)..<((r + 1) * width) {
                    let x = Double(got.scalars[c]), y = Double(simulated.scalars[c])
                    difference += (x - y) * (x - y)
                    norm += y * y
                }
                if difference > 1e-10 * norm { differingRows += 1 }
            }
            XCTAssertLessThanOrEqual(differingRows, max(2, rows / 100), "\(a.output.name): \(differingRows) of \(rows) head rows differ")
        }

        var floor = 0.0
        for seed in 0..<3 {
            var g = TorchGenerator(seed: UInt64(100 + seed))
            var perturbed = x
            for name in ["sample", "encoder_hidden_states"] {
                let t = x[name]!, noise = g.randn(t.shape)
                perturbed[name] = Tensor(shape: t.shape, scalars: zip(t.scalars, noise.scalars).map { $0 * (1 + $1 * 8 * Float.ulpOfOne) })
            }
            floor = max(floor, try swiftOutput(unet, perturbed).relativeL2(to: expected))
        }
        let fullPrecision = try UNet2DConditionModel.load(directory: Fixtures.path("tiny-sd15") + "/unet")
        let quantizationError = expected.relativeL2(to: try swiftOutput(fullPrecision, x))
        XCTAssertLessThanOrEqual(error, 3 * floor)
        XCTAssertLessThan(error, quantizationError / 2)
        print("onnx \(label) tiny-sd15 vs Swift simulation: relative L2 \(error); simulation's few-ulp floor \(floor); quantization error \(quantizationError); worst of \(layers) layers on the same input \(worstLayer.error) (\(worstLayer.name)); worst FP8 attention \(worstAttention)")
    }

    func testINT8Level3ExportMatchesTheSimulation() throws {
        _ = try pythonWithONNX()
        let folder = try quantizedFolder({ $0.format = .int8; $0.level = .allLinear; $0.smoothing = .fixed(0.8) }, name: "q8")
        try compareQuantized(folder, label: "int8 level 3 (opset 20)", opset: 20)

        // The FP16 Q/DQ graph (FP16 scales) runs too and stays closer to the simulation than the simulation is to FP32.
        let onnx = try export(folder, ["--precision", "fp16"])
        let unet = try QuantizedModelFolder.loadUNet(directory: folder + "/unet")
        let x = inputs(unet, height: 16, width: 24)
        let simulated = try swiftOutput(unet, x)
        let error = try XCTUnwrap(try onnxRuntime(onnx, x)["out_sample"]).relativeL2(to: simulated)
        let quantizationError = simulated.relativeL2(to: try swiftOutput(try UNet2DConditionModel.load(directory: Fixtures.path("tiny-sd15") + "/unet"), x))
        XCTAssertLessThan(error, quantizationError)
        print("onnx int8 level 3 FP16 graph vs Swift simulation: relative L2 \(error) (quantization error \(quantizationError))")
    }

    func testFP8Level4ExportMatchesTheSimulation() throws {
        _ = try pythonWithONNX()
        let folder = try quantizedFolder({ $0.format = .fp8; $0.level = .fp8Attention; $0.smoothing = .fixed(0.8) }, name: "f8")
        let manifest = try XCTUnwrap(try QuantizedModelFolder.manifest(unetDirectory: folder + "/unet"))
        XCTAssertFalse(manifest.fp8AttentionModules.isEmpty)
        try compareQuantized(folder, label: "fp8 level 4")
        // Calibrated softmax amax: the softmax Q/DQ takes each module's amax, as the simulation does.
        let calibrated = try quantizedFolder({ $0.format = .fp8; $0.level = .fp8Attention; $0.smoothing = .fixed(0.8)
                                               $0.calibratedProbabilityRange = true }, name: "f8p")
        let unet = try QuantizedModelFolder.loadUNet(directory: calibrated + "/unet")
        XCTAssertTrue(Quantizer.attentionModules(unet).contains { $0.usesFP8Attention && $0.fp8ProbabilityAmax < 1 })
        try compareQuantized(calibrated, label: "fp8 level 4, calibrated probability amax")
    }

    /// The pair counts `export-onnx --count-qdq` reports (placeholder quantization, no calibration) are those of a
    /// real quantized folder's export, and the ONNX file holds that many QuantizeLinear and DequantizeLinear nodes.
    func testQDQPairCountsMatchARealQuantizedExport() throws {
        let python = try pythonWithONNX()
        let folder = try quantizedFolder({ $0.format = .fp8; $0.level = .fp8Attention; $0.smoothing = .fixed(0.8) }, name: "f8")
        let onnx = scratch.path + "/f8.onnx"
        let summary = try ONNXUNetExporter.export(modelDirectory: folder, to: onnx)
        let predicted = try ONNXUNetExporter.qdqPairCounts(try UNet2DConditionModel.load(directory: Fixtures.path("tiny-sd15") + "/unet"),
                                                           level: .fp8Attention, format: .fp8)
        XCTAssertEqual(summary.qdqPairs, predicted)
        XCTAssertGreaterThan(predicted["attention softmax"] ?? 0, 0)
        let r = try RunningProcess(executable: python, arguments: [Self.runner, onnx, "-", "-", "--check-only", "--count-ops"], environment: [:]).finish()
        XCTAssertEqual(r.status, 0, r.stderr)
        let ops = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])?["ops"] as? [String: Int])
        let total = predicted.values.reduce(0, +)
        XCTAssertEqual(ops["QuantizeLinear"], total)
        XCTAssertEqual(ops["DequantizeLinear"], total)
    }

    func testRecipesThatCannotBeExpressedAreRefusedAndNothingIsWritten() throws {
        let dynamic = try quantizedFolder({ $0.dynamic = true }, name: "dyn")
        let output = scratch.path + "/out.onnx"
        var r = try run(["export-onnx", dynamic, "-o", output])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("quantization.json") && r.stderr.contains("dynamic"), r.stderr)
        // An unknown number format in the recipe.
        let manifestPath = dynamic + "/unet/quantization.json"
        let text = try String(contentsOfFile: manifestPath, encoding: .utf8).replacingOccurrences(of: "\"int8\"", with: "\"int4\"")
        try text.write(toFile: manifestPath, atomically: true, encoding: .utf8)
        r = try run(["export-onnx", dynamic, "-o", output])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("quantization.json") && r.stderr.contains("int4"), r.stderr)
        r = try run(["export-onnx", Fixtures.path("tiny-sd15"), "-o", output, "--opset", "18"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("19 or 20"), r.stderr)
        r = try run(["export-onnx", Fixtures.path("tiny-sd15"), "-o", output, "--precision", "bf16"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("fp32 or fp16"), r.stderr)
        let left = try FileManager.default.contentsOfDirectory(atPath: scratch.path).filter { $0.contains("onnx") }
        XCTAssertEqual(left, [])
    }
}

private struct ONNXRunFailure: Error, CustomStringConvertible {
    let description: String
}

import XCTest
@testable import Diffuse8

/// Producer quantization on the CPU: a LayerNorm, GEGLU or GroupNorm+SiLU read only by real INT8 layers also writes
/// their input codes (`CPUBackend.layerNorm(_:_:readBy:)`, `geglu(_:readBy:)`, `groupNorm(_:_:silu:readBy:)`). The codes
/// are checked against the simulation's rounding computed here (`Int8Codec` on (x · s) / scale: half to even, clamp to
/// [-128, 127], division, not multiplication by a reciprocal), the FP32 values against the plain kernels, and whole
/// models with producers writing codes against the same models quantizing in the layers' own pass and against the
/// simulation, bit for bit.
final class CPUProducerQuantizationTests: XCTestCase {
    private let producing = CPUBackend(quantizesInProducers: true)
    private let separate = CPUBackend(quantizesInProducers: false)

    // MARK: The codes

    /// GEGLU outputs placed on the rounding ties: with gate 8, gelu(gate) = 8 exactly, so a · gelu(gate) is any value
    /// we choose (a = v / 8). The values include every tie k + 0.5 of the scale and its neighbours, where division by
    /// the scale and multiplication by its reciprocal round apart, and values beyond the clamp; smoothed and not.
    func testGEGLUCodesAreTheSimulationsCodes() throws {
        let scale = QuantizedFormat.int8.scale(forAmax: 1)
        var values: [Float] = []
        for k in -131...131 {
            let tie = (Float(k) + 0.5) * scale
            values += [tie, tie.nextUp, tie.nextDown, Float(k) * scale]
        }
        let reciprocal = 1 / scale
        XCTAssertGreaterThan(values.filter { Int8Codec.quantize($0 * reciprocal) != Int8Codec.quantize($0 / scale) }.count, 0,
                             "the values must tell division from reciprocal multiplication")
        let width = 100, rows = (values.count + width - 1) / width
        values += [Float](repeating: 0.25, count: rows * width - values.count)
        var input = [Float](repeating: 8, count: rows * 2 * width)
        for r in 0..<rows { for j in 0..<width { input[r * 2 * width + j] = values[r * width + j] / 8 } }
        let x = Tensor(shape: [1, rows, 2 * width], scalars: input)
        XCTAssertEqual(CPUKernels.geglu(x).scalars, values, "premise: the GEGLU output is the chosen values")

        for (smoothing, dynamic) in [(nil, false), (Self.smoothing(width), false), (Self.smoothing(width), true)] as [([Float]?, Bool)] {
            let layer = Self.linear("ff.net.2", in: width, out: 7, inputAmax: dynamic ? nil : 1, smoothing: smoothing)
            let y = producing.geglu(x, readBy: layer)
            XCTAssertEqual(y.scalars, CPUKernels.geglu(x).scalars)
            try Self.checkRowCodes(y, layer, label: "geglu smoothed \(smoothing != nil) dynamic \(dynamic)")
            XCTAssertNil(separate.geglu(x, readBy: layer).quantizedInput, "off: no codes")
        }
    }

    /// LayerNorm rows (width 77: not a multiple of the 16-lane vectors nor of 4, 13 rows: two tiles and a bit), static
    /// and per-token scales, with the smoothing factors of several readers that share them (Q/K/V).
    func testLayerNormCodesAreTheSimulationsCodes() throws {
        let width = 77, rows = 13
        var random = TorchGenerator(seed: 5)
        let x = random.randn([1, rows, width])
        let norm = try Self.layerNorm("norm1", weight: random.randn([width]), bias: random.randn([width]))
        for dynamic in [false, true] {
            let smoothing = Self.smoothing(width)
            let readers = ["to_q", "to_k", "to_v"].map {
                Self.linear($0, in: width, out: 9, inputAmax: dynamic ? nil : 3.7, smoothing: smoothing)
            }
            let y = producing.layerNorm(x, norm, readBy: readers)
            XCTAssertEqual(y.scalars, norm(x).scalars, "the FP32 values are the plain kernel's")
            try Self.checkRowCodes(y, readers[0], label: "layerNorm dynamic \(dynamic)")
            // Each reader gives what it gives on the plain values (its own pass).
            for reader in readers {
                XCTAssertEqual(reader(y).scalars.map(\.bitPattern), reader(norm(x)).scalars.map(\.bitPattern), reader.name)
            }
        }
        // Readers that quantize differently (another scale, or no smoothing) get no codes: each quantizes its own input.
        let a = Self.linear("to_q", in: width, out: 9, inputAmax: 3.7, smoothing: nil)
        let b = Self.linear("to_k", in: width, out: 9, inputAmax: 2.9, smoothing: nil)
        XCTAssertNil(producing.layerNorm(x, norm, readBy: [a, b]).quantizedInput)
        XCTAssertNotNil(producing.layerNorm(x, norm, readBy: [a]).quantizedInput)
        // A reader that is not real INT8 (here FP32) gets the plain result.
        XCTAssertNil(producing.layerNorm(x, norm, readBy: [Linear(name: "fp", weight: random.randn([9, width]), bias: nil)]).quantizedInput)
    }

    /// GroupNorm + SiLU → channels-last codes of a static-scale INT8 convolution; a dynamic one quantizes its input
    /// itself (it needs the whole image's amax).
    func testGroupNormCodesAreTheSimulationsCodes() throws {
        var random = TorchGenerator(seed: 9)
        let n = 2, c = 8, h = 5, w = 7
        let x = random.randn([n, c, h, w])
        let norm = try GroupNorm(Self.store(["g.weight": random.randn([c]), "g.bias": random.randn([c])]), "g", groups: 4, epsilon: 1e-6)
        let conv = Self.conv("conv1", in: c, out: 16, inputAmax: 2.3)
        let y = producing.groupNorm(x, norm, silu: true, readBy: conv)
        XCTAssertEqual(y.scalars, norm(x, fusedSiLU: true).scalars)
        let produced = try XCTUnwrap(y.quantizedInput)
        XCTAssertEqual(produced.layout, .channelsLast(shape: x.shape))
        let scale = QuantizedFormat.int8.scale(forAmax: 2.3)
        XCTAssertEqual(produced.scales, [scale, scale])
        for b in 0..<n {
            for ch in 0..<c {
                for p in 0..<(h * w) {
                    let v = y.scalars[(b * c + ch) * h * w + p]
                    XCTAssertEqual(Int(produced.codes[(b * h * w + p) * c + ch]) - 128, Int(Int8Codec.quantize(v / scale)), "\(b) \(ch) \(p)")
                }
            }
        }
        XCTAssertEqual(conv(y).scalars.map(\.bitPattern), conv(norm(x, fusedSiLU: true)).scalars.map(\.bitPattern))
        XCTAssertNil(producing.groupNorm(x, norm, silu: true, readBy: Self.conv("dyn", in: c, out: 16, inputAmax: nil)).quantizedInput)
        XCTAssertNil(separate.groupNorm(x, norm, silu: true, readBy: conv).quantizedInput)
    }

    /// The codes go with the values they were made from: a changed copy carries none, an unchanged one keeps them.
    func testChangedValuesDropTheCodes() throws {
        var random = TorchGenerator(seed: 2)
        let x = random.randn([3, 32])
        let norm = try Self.layerNorm("n", weight: random.randn([32]), bias: random.randn([32]))
        let reader = Self.linear("l", in: 32, out: 4, inputAmax: 2, smoothing: nil)
        let y = producing.layerNorm(x, norm, readBy: [reader])
        XCTAssertNotNil(y.quantizedInput)
        var changed = y
        changed.scalars[0] += 1
        XCTAssertNil(changed.quantizedInput)
        XCTAssertNotNil(y.quantizedInput)
        XCTAssertEqual(reader(changed).scalars.map(\.bitPattern), reader(Tensor(shape: changed.shape, scalars: changed.scalars)).scalars.map(\.bitPattern))
    }

    /// Dropping the codes on a change does not copy the values: a uniquely held tensor is still changed in place.
    func testChangingValuesStaysInPlace() {
        var t = Tensor(zeros: [4096])
        let before = t.scalars.withUnsafeBufferPointer { $0.baseAddress }
        t.scalars[7] = 1
        t.scalars.withUnsafeMutableBufferPointer { $0[8] = 2 }
        XCTAssertEqual(t.scalars.withUnsafeBufferPointer { $0.baseAddress }, before)
        XCTAssertEqual(t.scalars[7] + t.scalars[8], 3)
    }

    // MARK: Whole models

    /// A static INT8 level-3 UNet (calibrated; Q/K/V share their scale and smoothing as `quantize` writes them): every
    /// producer writes codes (checked block by block), and the UNet's output with producers writing codes equals the
    /// output with every layer quantizing its own input and the simulated UNet's, bit for bit.
    func testStaticUNetWithProducerCodesEqualsSeparatePassAndSimulation() throws {
        try checkUNet(dynamic: false)
    }

    /// Dynamic INT8 (per-token scales): LayerNorm and GEGLU write per-row codes; convolutions quantize their own input.
    func testDynamicUNetWithProducerCodesEqualsSeparatePassAndSimulation() throws {
        try checkUNet(dynamic: true)
    }

    private func checkUNet(dynamic: Bool) throws {
        let source = Fixtures.path("tiny-sd15")
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("d8-producers-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let pipeline = try StableDiffusionPipeline(directory: source)
        var recipe = QuantizationRecipe()
        recipe.format = .int8
        recipe.level = .allLinear
        let statistics: CalibrationStatistics?
        if dynamic {
            recipe.dynamic = true
            statistics = nil
        } else {
            var options = CalibrationOptions(steps: 2)
            options.reservoirCapacity = 0
            statistics = try Calibrator.calibrate(pipeline, prompts: ["a red circle above a blue square", "a green triangle"], options: options)
            recipe.calibration = .max
        }
        try QuantizedModelFolder.write(source: source, quantized: try Quantizer.quantize(pipeline.unet!, statistics: statistics, recipe: recipe),
                                       to: scratch)
        let (simulated, _) = try QuantizedModelFolder.loadQuantizedUNet(directory: scratch + "/unet", execution: .simulated)
        let (native, _) = try QuantizedModelFolder.loadQuantizedUNet(directory: scratch + "/unet", execution: .native)

        // Where the producers write codes.
        var random = TorchGenerator(seed: 4)
        var blocks = 0, resnets = 0
        for block in native.transformers.flatMap(\.blocks) {
            let channels = block.norm1.weight.count
            let tokens = random.randn([2, 16, channels])
            let a = block.selfAttention
            XCTAssertNotNil(producing.layerNorm(tokens, block.norm1, readBy: [a.query, a.key, a.value]).quantizedInput, "Q/K/V share their input codes")
            XCTAssertNotNil(producing.layerNorm(tokens, block.norm2, readBy: [block.crossAttention.query]).quantizedInput)
            XCTAssertNotNil(producing.layerNorm(tokens, block.norm3, readBy: [block.feedForward.projectIn]).quantizedInput)
            let hidden = random.randn([2, 16, 2 * block.feedForward.projectOut.inFeatures])
            XCTAssertNotNil(producing.geglu(hidden, readBy: block.feedForward.projectOut).quantizedInput)
            blocks += 1
        }
        for resnet in native.resnets {
            for (norm, conv) in [(resnet.norm1, resnet.conv1), (resnet.norm2, resnet.conv2)] {
                let x = random.randn([2, conv.inChannels, 4, 4])
                XCTAssertEqual(producing.groupNorm(x, norm, silu: true, readBy: conv).quantizedInput != nil, !dynamic, conv.name)
            }
            resnets += 1
        }
        XCTAssertGreaterThan(blocks, 0)
        XCTAssertGreaterThan(resnets, 0)

        var noise = TorchGenerator(seed: 3)
        let sample = noise.randn([2, 4, 8, 8])
        let context = noise.randn([2, 77, native.configuration.crossAttentionDim[0]])
        let reference = simulated(sample: sample, timestep: 500, encoderHiddenStates: context)
        let features = try native.timeFeatures(timesteps: [500, 500], timeIds: nil)
        func run(_ backend: CPUBackend) throws -> Tensor {
            try native.forward(backend, sample: sample, timeFeatures: features.time, timeIdFeatures: nil, encoderHiddenStates: context,
                               textEmbeds: nil)
        }
        let fused = try run(producing), unfused = try run(separate)
        XCTAssertNil(CPUInt8KernelTests.firstDifference(unfused.scalars, reference.scalars), "separate pass vs simulation")
        XCTAssertNil(CPUInt8KernelTests.firstDifference(fused.scalars, unfused.scalars), "producers vs separate pass, dynamic \(dynamic)")
        XCTAssertNil(CPUInt8KernelTests.firstDifference(fused.scalars, reference.scalars), "producers vs simulation, dynamic \(dynamic)")
    }

    // MARK: Helpers

    /// The codes attached to `y` are the simulation's codes of `y`'s values for `reader`, in the GEMM's A layout.
    private static func checkRowCodes(_ y: Tensor, _ reader: Linear, label: String) throws {
        let produced = try XCTUnwrap(y.quantizedInput, label)
        let layer = try XCTUnwrap(reader.quantization)
        let k = y.shape.last!, rows = y.count / k
        guard case let .rows(width, lda, count) = produced.layout else { return XCTFail("\(label): not row codes") }
        XCTAssertEqual(width, k)
        XCTAssertEqual(count, rows)
        XCTAssertEqual(lda, (k + 3) / 4 * 4)
        let mr = CPUInt8Kernel.tileRows
        XCTAssertEqual(produced.codes.count, (rows + mr - 1) / mr * mr * lda, label)
        var mismatches = 0
        for r in 0..<rows {
            let smoothed = (0..<k).map { y.scalars[r * k + $0] * (layer.smoothing?[$0] ?? 1) }
            let scale = layer.inputAmax.map { QuantizedFormat.int8.scale(forAmax: $0) }
                ?? QuantizedFormat.int8.scale(forAmax: smoothed.map(abs).max()!)
            XCTAssertEqual(produced.scales[r].bitPattern, scale.bitPattern, "\(label) row \(r) scale")
            for j in 0..<lda {
                let expected = j < k ? Int(Int8Codec.quantize(smoothed[j] / scale)) : 0
                if Int(produced.codes[r * lda + j]) - 128 != expected { mismatches += 1 }
            }
        }
        XCTAssertEqual(mismatches, 0, label)
        XCTAssertTrue(produced.codes[(rows * lda)...].allSatisfy { $0 == 128 }, "\(label): padding rows hold code 0")
    }

    private static func smoothing(_ width: Int) -> [Float] { (0..<width).map { [0.37, 1, 2.9, 0.81][$0 % 4] } }

    private static func linear(_ name: String, in k: Int, out o: Int, inputAmax: Float?, smoothing: [Float]?) -> Linear {
        var random = TorchGenerator(seed: UInt64(k * 31 + o))
        let codes = (0..<(o * k)).map { _ in UInt8(truncatingIfNeeded: random.nextUInt64()) }
        let weight = QuantizedWeight(format: .int8, shape: [o, k], codes: codes, scales: (0..<o).map { 0.013 * Float($0 + 1) })
        let linear = Linear(name: name, weight: Tensor(zeros: [0]), bias: random.randn([o]))
        CPUInt8LayerHook.install(QuantizedLayer(name: name, kind: .linear, weight: weight, inputAmax: inputAmax, smoothing: smoothing,
                                                outputAmax: nil), on: linear)
        return linear
    }

    private static func conv(_ name: String, in c: Int, out o: Int, inputAmax: Float?) -> Conv2d {
        var random = TorchGenerator(seed: UInt64(c * 17 + o))
        let codes = (0..<(o * c * 9)).map { _ in UInt8(truncatingIfNeeded: random.nextUInt64()) }
        let weight = QuantizedWeight(format: .int8, shape: [o, c, 3, 3], codes: codes, scales: (0..<o).map { 0.011 * Float($0 + 1) })
        let conv = Conv2d(name: name, weight: weight.dequantized(), bias: random.randn([o]), stride: 1, padding: 1)
        CPUInt8LayerHook.install(QuantizedLayer(name: name, kind: .conv2d, weight: weight, inputAmax: inputAmax, smoothing: nil,
                                                outputAmax: nil), on: conv)
        return conv
    }

    private static func store(_ tensors: [String: Tensor]) -> TensorStore { Weights(tensors: tensors) }

    private static func layerNorm(_ name: String, weight: Tensor, bias: Tensor) throws -> LayerNorm {
        try LayerNorm(store([name + ".weight": weight, name + ".bias": bias]), name, epsilon: 1e-5)
    }

    private struct Weights: TensorStore {
        let tensors: [String: Tensor]
        var tensorNames: [String] { tensors.keys.sorted() }
        func tensor(named name: String) throws -> Tensor { tensors[name]! }
    }
}

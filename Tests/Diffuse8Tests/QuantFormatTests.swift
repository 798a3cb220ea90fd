import XCTest
@testable import Diffuse8

/// Number formats and fake-quantized layers against torch (`tools/reference/quantization.py`), plus
/// hand-computed rounding cases.
final class QuantFormatTests: XCTestCase {
    func testFP8EncodingIsBitExactWithTorch() throws {
        let ref = try Fixtures.reference("quant_formats")
        let input = try ref.tensor(named: "fp8_input").scalars
        let codes = Array(try ref.rawBytes(named: "fp8_codes"))
        let decoded = try ref.tensor(named: "fp8_decoded").scalars
        XCTAssertEqual(input.count, codes.count)
        for (i, x) in input.enumerated() {
            XCTAssertEqual(FP8E4M3.encode(x), codes[i], "encode(\(x))")
            let d = FP8E4M3.decode(codes[i])
            if decoded[i].isNaN { XCTAssertTrue(d.isNaN) } else { XCTAssertEqual(d.bitPattern, decoded[i].bitPattern, "decode(\(codes[i]))") }
        }
    }

    /// The branch-free rounding the fake-quantization loops use: torch's decoded values for the reference inputs, and
    /// encode-then-decode (bit-exact with torch above) at every E4M3 value, both neighbours of every midpoint between
    /// two of them (where the rounding decides), and at the midpoints themselves (ties to even), both signs.
    func testFP8RoundingWithoutTheByteMatchesTorchAndTheCodec() throws {
        let ref = try Fixtures.reference("quant_formats")
        let input = try ref.tensor(named: "fp8_input").scalars, decoded = try ref.tensor(named: "fp8_decoded").scalars
        for (x, expected) in zip(input, decoded) {
            let r = FP8E4M3.rounded(x)
            if expected.isNaN { XCTAssertTrue(r.isNaN, "rounded(\(x))") } else { XCTAssertEqual(r.bitPattern, expected.bitPattern, "rounded(\(x))") }
        }
        let grid = (0...0x7E).map { FP8E4M3.decode(UInt8($0)) } + [480]   // 480: the next step past 448, for the midpoint 464
        var probes: [Float] = [0, .infinity, 1e30, .leastNonzeroMagnitude, .leastNormalMagnitude]
        for (a, b) in zip(grid, grid.dropFirst()) {
            let mid = (a + b) / 2
            probes += [a, a.nextUp, mid.nextDown, mid, mid.nextUp, b.nextDown]
        }
        for p in probes {
            for v in [p, -p] {
                XCTAssertEqual(FP8E4M3.rounded(v).bitPattern, FP8E4M3.decode(FP8E4M3.encode(v)).bitPattern, "rounded(\(v))")
            }
        }
        XCTAssertTrue(FP8E4M3.rounded(.nan).isNaN)
    }

    func testFP8HandCases() {
        XCTAssertEqual(FP8E4M3.encode(448), 0x7E)
        XCTAssertEqual(FP8E4M3.encode(500), 0x7E)            // saturates
        XCTAssertEqual(FP8E4M3.encode(-.infinity), 0xFE)
        XCTAssertEqual(FP8E4M3.encode(.nan) & 0x7F, 0x7F)    // NaN stays NaN
        XCTAssertEqual(FP8E4M3.encode(0.001953125), 0x01)    // 2^-9, smallest subnormal
        XCTAssertEqual(FP8E4M3.encode(0.0009765625), 0x00)   // 2^-10: tie → even (0)
        XCTAssertEqual(FP8E4M3.encode(0.0029296875), 0x02)   // 1.5·2^-9: tie → even (2)
        XCTAssertEqual(FP8E4M3.encode(1.0625), 0x38)         // 1 + 1/16: tie between 1 and 1.125 → 1
        XCTAssertEqual(FP8E4M3.encode(1.1875), 0x3A)         // 1.1875: tie → 1.25 (mantissa 2)
        XCTAssertEqual(FP8E4M3.encode(-0.0), 0x80)
        XCTAssertEqual(FP8E4M3.decode(0x7E), 448)
        XCTAssertEqual(FP8E4M3.decode(0x08), 0.015625)
    }

    func testInt8RoundingMatchesTorch() throws {
        let ref = try Fixtures.reference("quant_formats")
        let input = try ref.tensor(named: "int8_input").scalars
        let scale = try ref.tensor(named: "int8_scale").scalars[0]
        let codes = Array(try ref.rawBytes(named: "int8_codes")).map { Int8(bitPattern: $0) }
        for (i, x) in input.enumerated() { XCTAssertEqual(Int8Codec.quantize(x / scale), codes[i], "\(x)") }
    }

    func testInt8HandCases() {
        XCTAssertEqual(Int8Codec.quantize(0.5), 0)
        XCTAssertEqual(Int8Codec.quantize(1.5), 2)
        XCTAssertEqual(Int8Codec.quantize(2.5), 2)
        XCTAssertEqual(Int8Codec.quantize(-2.5), -2)
        XCTAssertEqual(Int8Codec.quantize(126.5), 126)
        XCTAssertEqual(Int8Codec.quantize(127.5), 127)
        XCTAssertEqual(Int8Codec.quantize(-128.5), -128)
        XCTAssertEqual(Int8Codec.quantize(-300), -128)
        XCTAssertEqual(QuantizedFormat.int8.scale(forAmax: 12.7), 0.1, accuracy: 1e-7)
        XCTAssertEqual(QuantizedFormat.fp8.scale(forAmax: 44.8), 0.1, accuracy: 1e-7)
        XCTAssertEqual(QuantizedFormat.int8.scale(forAmax: 0), 1)
    }

    func testPerChannelWeightScales() {
        // Conv [O=2, I=1, 1, 2]: channel amax 2 and 0.5 → scales 2/127, 0.5/127.
        let w = Tensor(shape: [2, 1, 1, 2], scalars: [1, -2, 0.25, 0.5])
        let q = QuantizedWeight(quantizing: w, format: .int8, perChannel: true)
        XCTAssertEqual(q.scales, [2 / 127, 0.5 / 127])
        XCTAssertEqual(q.codes.map { Int8(bitPattern: $0) }, [64, -127, 64, 127])  // 63.5 → 64 (even)
        let f = QuantizedWeight(quantizing: w, format: .fp8, perChannel: false)
        XCTAssertEqual(f.scales, [2 / 448])
    }

    private func layerCase(_ format: QuantizedFormat) throws {
        let ref = try Fixtures.reference("quant_layers")
        let lw = try ref.tensor(named: "linear_weight"), lb = try ref.tensor(named: "linear_bias")
        let lx = try ref.tensor(named: "linear_input")
        let linear = Linear(name: "l", weight: lw, bias: lb)
        let lq = QuantizedWeight(quantizing: lw, format: format, perChannel: format == .int8)
        XCTAssertEqual(lq.scales, try ref.tensor(named: "linear_\(format)_weight_scale").scalars)
        linear.weight = lq.dequantized()
        linear.executionHook = SimulatedQuantizationHook(QuantizedLayer(
            name: "l", kind: .linear, weight: lq, inputAmax: try ref.tensor(named: "linear_act_amax").scalars[0], smoothing: nil, outputAmax: nil))
        XCTAssertLessThan(linear(lx).relativeL2(to: try ref.tensor(named: "linear_\(format)_output")), 1e-6)

        let cw = try ref.tensor(named: "conv_weight"), cb = try ref.tensor(named: "conv_bias")
        let conv = Conv2d(name: "c", weight: cw, bias: cb, padding: 1)
        let cq = QuantizedWeight(quantizing: cw, format: format, perChannel: format == .int8)
        XCTAssertEqual(cq.scales, try ref.tensor(named: "conv_\(format)_weight_scale").scalars)
        conv.weight = cq.dequantized()
        conv.executionHook = SimulatedQuantizationHook(QuantizedLayer(
            name: "c", kind: .conv2d, weight: cq, inputAmax: try ref.tensor(named: "conv_act_amax").scalars[0], smoothing: nil, outputAmax: nil))
        XCTAssertLessThan(conv(try ref.tensor(named: "conv_input")).relativeL2(to: try ref.tensor(named: "conv_\(format)_output")), 1e-6)
    }

    func testFakeQuantizedLayersMatchTorchInt8() throws { try layerCase(.int8) }
    func testFakeQuantizedLayersMatchTorchFP8() throws { try layerCase(.fp8) }

    func testSmoothQuantMatchesTorch() throws {
        let ref = try Fixtures.reference("quant_layers")
        let lw = try ref.tensor(named: "linear_weight"), lx = try ref.tensor(named: "linear_input")
        var channelAmax = [Float](repeating: 0, count: 16)
        for (i, v) in lx.scalars.enumerated() { channelAmax[i % 16] = max(channelAmax[i % 16], abs(v)) }
        let s = QuantizationRecipe.smoothingScales(weight: lw, channelAmax: channelAmax, alpha: 0.8)
        let expected = try ref.tensor(named: "smooth_scales_0.8").scalars
        for (a, b) in zip(s, expected) { XCTAssertEqual(a, b, accuracy: 1e-5 * b) }
        let weight = QuantizedWeight(quantizing: Quantizer.smoothedWeight(lw, s), format: .int8, perChannel: true)
        let linear = Linear(name: "l", weight: weight.dequantized(), bias: try ref.tensor(named: "linear_bias"))
        let amax = zip(channelAmax, s).map { $0 * $1 }.max()!
        linear.executionHook = SimulatedQuantizationHook(QuantizedLayer(name: "l", kind: .linear, weight: weight, inputAmax: amax, smoothing: s, outputAmax: nil))
        XCTAssertLessThan(linear(lx).relativeL2(to: try ref.tensor(named: "linear_int8_smooth_output")), 1e-5)
    }

    func testSmoothQuantHandCase() {
        // W columns amax: [4, 0, 1]; X channel amax: [1, 5, 16]; α = 0.5 → s = [√4/√1, 1 (zero column), √1/√16].
        let w = Tensor(shape: [2, 3], scalars: [4, 0, -1, -2, 0, 0.5])
        let s = QuantizationRecipe.smoothingScales(weight: w, channelAmax: [1, 5, 16], alpha: 0.5)
        XCTAssertEqual(s[0], 2, accuracy: 1e-6)
        XCTAssertEqual(s[1], 1)
        XCTAssertEqual(s[2], 0.25, accuracy: 1e-6)
        // Clamp to [1e-4, 1e4]: α = 1, X amax 1e6 → 1e-6 → 1e-4.
        XCTAssertEqual(QuantizationRecipe.smoothingScales(weight: w, channelAmax: [1e6, 1, 1], alpha: 1)[0], 1e-4, accuracy: 1e-9)
    }

    func testDynamicQuantizationUsesPerTokenScales() {
        // Two tokens with amax 127 (scale 1) and 63.5 (scale 0.5), each quantized with its own scale.
        let x = Tensor(shape: [1, 2, 2], scalars: [127, -63.5, 63.5, 0.25])
        let q = QuantizedLayer.quantizeActivation(x, kind: .linear, format: .int8, amax: nil, smoothing: nil)
        XCTAssertEqual(q.scalars[0], 127)
        XCTAssertEqual(q.scalars[1], -64)  // -63.5 → -64 (even)
        XCTAssertEqual(q.scalars[2], 63.5)
        XCTAssertEqual(q.scalars[3], 0)    // 0.25 / 0.5 = 0.5 → 0 (even)
    }

    func testAlphaSearchPicksTheLowestOutputError() throws {
        let ref = try Fixtures.reference("quant_layers")
        let lw = try ref.tensor(named: "linear_weight"), lx = try ref.tensor(named: "linear_input")
        let samples = lx.reshaped([-1, 16])
        var channelAmax = [Float](repeating: 0, count: 16)
        for (i, v) in samples.scalars.enumerated() { channelAmax[i % 16] = max(channelAmax[i % 16], abs(v)) }
        let recipe = QuantizationRecipe()
        let (alpha, errors) = Quantizer.searchAlpha(Linear(name: "l", weight: lw, bias: nil), channelAmax: channelAmax,
                                                    samples: samples, recipe: recipe, perChannel: true)
        XCTAssertEqual(errors.count, recipe.alphaGrid.count + 1)  // the grid, then no smoothing
        let best = errors.indices.min { errors[$0] < errors[$1] }!
        if let alpha {
            XCTAssertEqual(alpha, recipe.alphaGrid[best])
        } else {
            XCTAssertEqual(best, errors.count - 1)
        }
        // With an outlier activation channel (×20) the search smooths, and beats no smoothing.
        XCTAssertNotNil(alpha, "\(errors)")
        XCTAssertLessThan(errors[best], errors.last! / 2)
    }
}

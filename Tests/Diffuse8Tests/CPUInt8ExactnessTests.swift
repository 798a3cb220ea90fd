import XCTest
@testable import Diffuse8

/// Real INT8 execution (`CPUInt8LayerHook`) against the simulation (`SimulatedQuantizationHook`) and an independent
/// integer reference, bit for bit, once per kernel variant this CPU can run: the simulation sums the codes exactly and
/// dequantizes as Float(Σ) · (s_x · s_w) + b, so with ordinary (non-power-of-two) scales any difference is a difference
/// in the math (rounding mode, clamp, scale, smoothing order, dequantization, bias/residual, padding, the u8 × s8
/// compensation, saturation). Extreme codes (every activation 127 or -128 against weights of 127 or -128) would
/// overflow an INT16 pair sum (`vpmaddubsw` saturates at 32767) and use the full compensation term of the u8 × s8
/// instructions.
final class CPUInt8ExactnessTests: XCTestCase {
    // MARK: Activation codes

    /// The activation codes are `Int8Codec`'s (the simulation's rounding): half to even, clamp to [-128, 127],
    /// NaN to 0, x / scale by division (not multiplication by a reciprocal). Codes are stored + 128.
    func testActivationCodesAreTheSimulationsCodes() {
        // Hand-checked: ties go to the even neighbour, the clamp keeps -128 (the simulation's range, not ±127).
        let hand: [(Float, Int)] = [(0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (-2.5, -2), (0.49999997, 0),
                                    (126.5, 126), (127.49, 127), (127.5, 127), (1e9, 127), (-127.5, -128), (-128.4, -128),
                                    (-128.5, -128), (-1e9, -128), (.infinity, 127), (-.infinity, -128), (.nan, 0), (-0.0, 0)]
        var out = [UInt8](repeating: 0, count: hand.count)
        CPUInt8LayerHook.encode(hand.map(\.0), count: hand.count, scale: 1, into: &out)
        for (i, (value, code)) in hand.enumerated() {
            XCTAssertEqual(Int(out[i]) - 128, code, "\(value)")
            XCTAssertEqual(Int(Int8Codec.quantize(value)), code, "simulation: \(value)")
        }

        // Every tie k + 0.5 and its float neighbours, and values under a scale with no exact reciprocal (amax 1,
        // scale 1/127 rounded): x · (1/scale) rounds differently from x / scale for some of them.
        let scale = QuantizedFormat.int8.scale(forAmax: 1)
        var values: [Float] = []
        for k in -131...131 {
            let tie = Float(k) + 0.5
            values += [tie, tie.nextUp, tie.nextDown]
            let scaled = tie * scale
            values += [scaled, scaled.nextUp, scaled.nextDown]
        }
        let reciprocal = 1 / scale
        let reciprocalDiffers = values.filter { Int8Codec.quantize($0 * reciprocal) != Int8Codec.quantize($0 / scale) }.count
        XCTAssertGreaterThan(reciprocalDiffers, 0, "the value set must tell division from reciprocal multiplication")
        var codes = [UInt8](repeating: 0, count: values.count)
        CPUInt8LayerHook.encode(values, count: values.count, scale: scale, into: &codes)
        for (i, v) in values.enumerated() {
            XCTAssertEqual(Int(codes[i]) - 128, Int(Int8Codec.quantize(v / scale)), "\(v) / \(scale)")
        }
        var unit = [UInt8](repeating: 0, count: values.count)
        CPUInt8LayerHook.encode(values, count: values.count, scale: 1, into: &unit)
        for (i, v) in values.enumerated() { XCTAssertEqual(Int(unit[i]) - 128, Int(Int8Codec.quantize(v)), "\(v)") }
    }

    // MARK: Layers, bit for bit, per variant

    func testPortableIsExact() throws { try checkExact(.portable) }
    func testAVX2IsExact() throws { try checkExact(.avx2) }
    func testAVX512VNNIIsExact() throws { try checkExact(.avx512vnni) }
    func testNEONDotIsExact() throws { try checkExact(.neonDot) }

    private func checkExact(_ kernel: CPUInt8Kernel) throws {
        guard kernel.isSupported else { throw XCTSkip("this CPU (or architecture) lacks the \(kernel.rawValue) instructions") }
        for smoothed in [false, true] {
            try linear(kernel, dynamic: false, smoothed: smoothed)
            try linear(kernel, dynamic: true, smoothed: smoothed)
        }
        try conv(kernel, dynamic: false, kernelSize: 3, stride: 1, padding: 1)
        try conv(kernel, dynamic: false, kernelSize: 3, stride: 2, padding: 1)
        try conv(kernel, dynamic: true, kernelSize: 3, stride: 1, padding: 1)
        try conv(kernel, dynamic: true, kernelSize: 1, stride: 1, padding: 0)
    }

    /// K = 1021 (not a multiple of 4), 13 rows (two and a bit 6-row tiles), 70 outputs (three 32-column panels, the
    /// last partial); weight scales and (dynamic) activation scales that are not powers of two.
    private func linear(_ kernel: CPUInt8Kernel, dynamic: Bool, smoothed: Bool) throws {
        let rows = 13, k = 1021, outputs = 70
        var random = TorchGenerator(seed: 11)
        // Weight codes: channel 0 all 127, 1 all -128, 2 all -127, the rest random over the whole range.
        var codes = [Int8](repeating: 0, count: outputs * k)
        for o in 0..<outputs {
            for j in 0..<k {
                codes[o * k + j] = o == 0 ? 127 : o == 1 ? -128 : o == 2 ? -127 : Int8(truncatingIfNeeded: random.nextUInt64())
            }
        }
        let scales = (0..<outputs).map { i -> Float in 0.0137 * Float(i % 5 + 1) + 0.001 * Float(i) }  // no power of two among them
        let weight = QuantizedWeight(format: .int8, shape: [outputs, k], codes: codes.map { UInt8(bitPattern: $0) }, scales: scales)
        let smoothing: [Float]? = smoothed ? (0..<k).map { [0.5, 1, 2, 4][$0 % 4] } : nil
        // Activations after smoothing (x ⊙ s), chosen per row, then divided by s to give x:
        // row 0 all 127 (byte 255), row 1 all -128 (clamped from -1000), row 2 ties k + 0.5, row 3 zeros,
        // others random codes and ties. Dynamic rows carry an amax of 127 · f (f = 0.7, 1.3, 2.9: scales that are
        // not powers of two, so the codes are the rounding of values near, not at, the ties).
        var smoothedInput = [Float](repeating: 0, count: rows * k)
        for r in 0..<rows {
            for j in 0..<k {
                let v: Float
                switch r {
                case 0: v = 127
                case 1: v = dynamic ? -127 : -1000
                case 2: v = Float(Int(random.nextUInt64() % 250) - 125) + 0.5
                case 3: v = 0
                default: v = Float(Int(random.nextUInt64() % 256) - 128) + (random.nextUInt64() % 3 == 0 ? 0.5 : 0)
                }
                smoothedInput[r * k + j] = v
            }
            if dynamic && r >= 2 && r != 3 {
                let factor: Float = [0.7, 1.3, 2.9][r % 3]
                for j in 0..<k { smoothedInput[r * k + j] = max(-127, min(127, smoothedInput[r * k + j])) * factor }
                smoothedInput[r * k + r] = 127 * factor
            }
        }
        var x = Tensor(shape: [rows, k], scalars: smoothedInput)
        if let smoothing { for r in 0..<rows { for j in 0..<k { x.scalars[r * k + j] /= smoothing[j] } } }
        let bias = Tensor(shape: [outputs], scalars: (0..<outputs).map { Float($0 % 7) - 3 })
        let residual = Tensor(shape: [rows, outputs], scalars: (0..<(rows * outputs)).map { Float($0 % 11) - 5 })
        let layer = QuantizedLayer(name: "exact", kind: .linear, weight: weight, inputAmax: dynamic ? nil : 127,
                                   smoothing: smoothing, outputAmax: nil)

        let simulated = Linear(name: "exact", weight: weight.dequantized(), bias: bias)
        simulated.executionHook = SimulatedQuantizationHook(layer)
        let expected = CPUKernels.add(simulated(x), residual)
        // The simulation equals the integer reference (Int sums of the codes).
        let integer = Self.integerLinear(smoothedInput, rows: rows, k: k, codes: codes, scales: scales, bias: bias.scalars,
                                         residual: residual.scalars, dynamic: dynamic)
        XCTAssertNil(Self.firstDifference(expected.scalars, integer), "simulation vs integer reference, dynamic \(dynamic) smoothed \(smoothed)")
        // Premise: these scales make the order of the epilogue's products visible (a simulation computing
        // Σ (q_x · s_x)(q_w · s_w) in FP32, or Float(Σ) · s_x · s_w, would not pass).
        let dequantizedFirst = CPUKernels.add(simulatedByDequantization(layer, x, bias: bias), residual)
        XCTAssertNotNil(Self.firstDifference(dequantizedFirst.scalars, integer), "the scales must tell the epilogue's order apart")

        let real = CPUInt8LayerHook(layer).run(Linear(name: "exact", weight: Tensor(zeros: [0]), bias: bias), x,
                                               residual: residual, kernel: kernel)
        let label = "\(kernel.rawValue) linear dynamic \(dynamic) smoothed \(smoothed)"
        XCTAssertEqual(real.shape, expected.shape, label)
        XCTAssertEqual(Self.firstDifference(real.scalars, expected.scalars), nil, label)
    }

    /// Float(Σ code(x) · w) · (s_x · s_w) + b, then + residual, the sum in integers (the codes by
    /// `Float.rounded(.toNearestOrEven)` and a clamp to [-128, 127]; dynamic rows: s_x = amax / 127).
    private static func integerLinear(_ v: [Float], rows: Int, k: Int, codes: [Int8], scales: [Float], bias: [Float],
                                      residual: [Float], dynamic: Bool) -> [Float] {
        let outputs = scales.count
        var out = [Float](repeating: 0, count: rows * outputs)
        for r in 0..<rows {
            let amax = v[(r * k)..<((r + 1) * k)].reduce(Float(0)) { max($0, abs($1)) }
            let sx: Float = dynamic ? (amax > 0 ? amax / 127 : 1) : 1
            let a = (0..<k).map { Int(max(-128, min(127, (v[r * k + $0] / sx).rounded(.toNearestOrEven)))) }
            for o in 0..<outputs {
                var sum = 0
                for j in 0..<k { sum += a[j] * Int(codes[o * k + j]) }
                let dequantized = Float(sum) * (sx * scales[o]) + bias[o]
                out[r * outputs + o] = dequantized + residual[r * outputs + o]
            }
        }
        return out
    }

    /// 2 images of 13 channels 7 × 7 → 40 channels (two panels): K = 13 · kh · kw, padding taps are code 0; weight
    /// scales and the static activation scale are not powers of two, dynamic samples get amax 127 · 0.7 and 127 · 2.9.
    private func conv(_ kernel: CPUInt8Kernel, dynamic: Bool, kernelSize: Int, stride: Int, padding: Int) throws {
        let n = 2, c = 13, size = 7, outputs = 40
        var random = TorchGenerator(seed: 5)
        let k = c * kernelSize * kernelSize
        let codes = (0..<(outputs * k)).map { i -> Int8 in i < k ? 127 : i < 2 * k ? -128 : Int8(truncatingIfNeeded: random.nextUInt64()) }
        let scales = (0..<outputs).map { i -> Float in 0.0213 * Float(i % 4 + 1) + 0.0007 * Float(i) }
        let weight = QuantizedWeight(format: .int8, shape: [outputs, c, kernelSize, kernelSize],
                                     codes: codes.map { UInt8(bitPattern: $0) }, scales: scales)
        let imageSize = c * size * size
        var x = Tensor(shape: [n, c, size, size], scalars: (0..<(n * imageSize)).map { _ in
            Float(Int(random.nextUInt64() % 300) - 150) + (random.nextUInt64() % 2 == 0 ? 0.5 : 0)
        })
        if dynamic {
            for b in 0..<n {
                let factor: Float = b == 0 ? 0.7 : 2.9
                for i in 0..<imageSize { x.scalars[b * imageSize + i] = max(-127, min(127, x.scalars[b * imageSize + i])) * factor }
                x.scalars[b * imageSize + 3] = -127 * factor
            }
        }
        let inputAmax: Float = 111.3
        let bias = Tensor(shape: [outputs], scalars: (0..<outputs).map { Float($0 % 5) * 0.37 - 0.71 })
        let layer = QuantizedLayer(name: "exact", kind: .conv2d, weight: weight, inputAmax: dynamic ? nil : inputAmax, smoothing: nil, outputAmax: nil)
        let simulated = Conv2d(name: "exact", weight: weight.dequantized(), bias: bias, stride: stride, padding: padding)
        simulated.executionHook = SimulatedQuantizationHook(layer)
        let expected = simulated(x)
        let real = CPUInt8LayerHook(layer).run(Conv2d(name: "exact", weight: weight.dequantized(), bias: bias, stride: stride, padding: padding),
                                               x, kernel: kernel)
        let label = "\(kernel.rawValue) conv k\(kernelSize) s\(stride) p\(padding) dynamic \(dynamic)"
        XCTAssertEqual(real.shape, expected.shape, label)
        XCTAssertNil(Self.firstDifference(real.scalars, expected.scalars), label)
        // Independent of both: the convolution in integers, Float(Σ) · (s_x · s_w) + b.
        let oh = (size + 2 * padding - kernelSize) / stride + 1
        var integer: [Float] = []
        for b in 0..<n {
            let image = x.scalars[(b * imageSize)..<((b + 1) * imageSize)]
            let amax = dynamic ? image.reduce(Float(0)) { max($0, abs($1)) } : inputAmax
            let sx = amax / 127
            let q = image.map { Int(max(-128, min(127, ($0 / sx).rounded(.toNearestOrEven)))) }
            for o in 0..<outputs {
                for oy in 0..<oh {
                    for ox in 0..<oh {
                        var sum = 0
                        for ch in 0..<c {
                            for ky in 0..<kernelSize {
                                for kx in 0..<kernelSize {
                                    let iy = oy * stride - padding + ky, ix = ox * stride - padding + kx
                                    guard iy >= 0, ix >= 0, iy < size, ix < size else { continue }
                                    sum += q[(ch * size + iy) * size + ix] * Int(codes[((o * c + ch) * kernelSize + ky) * kernelSize + kx])
                                }
                            }
                        }
                        integer.append(Float(sum) * (sx * scales[o]) + bias.scalars[o])
                    }
                }
            }
        }
        XCTAssertNil(Self.firstDifference(real.scalars, integer), label + " vs integer reference")
    }

    /// The earlier simulation: the FP32 kernel on fake-quantized input and dequantized weight (rounding after every
    /// product and sum).
    private func simulatedByDequantization(_ layer: QuantizedLayer, _ x: Tensor, bias: Tensor) -> Tensor {
        CPUKernels.linear(layer.quantizedInput(x), weight: layer.weight.dequantized(), bias: bias)
    }

    /// The first index where the arrays differ bitwise, with both values; nil when equal.
    private static func firstDifference(_ a: [Float], _ b: [Float]) -> String? {
        guard a.count == b.count else { return "\(a.count) vs \(b.count) values" }
        guard let i = a.indices.first(where: { a[$0].bitPattern != b[$0].bitPattern }) else { return nil }
        return "element \(i): \(a[i]) vs \(b[i])"
    }
}

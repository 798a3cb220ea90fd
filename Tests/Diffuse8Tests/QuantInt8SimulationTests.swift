import XCTest
@testable import Diffuse8

/// The INT8 simulation's exact integer product (`Int8ExactProduct`, behind `SimulatedQuantizationHook`): reductions so
/// deep that FP32 sums of the codes would round are cut into chunks whose every partial sum is exact, and the layer's
/// output equals an integer reference, Float(Σ) · (s_x · s_w) + b, bit for bit.
final class QuantInt8SimulationTests: XCTestCase {
    /// Chunks tile the reduction in order, and in each one 128 · Σ|q_w| ≤ 2²⁴ for every output channel.
    func testChunksBoundEveryPartialSum() {
        let k = 5000
        // Channel 0 all 127: 131072 / 127 = 1032.06, so chunks of 1032 features; channel 1 zeros; channel 2 small codes.
        var random = TorchGenerator(seed: 7)
        let codes = (0..<(3 * k)).map { i -> Int8 in i < k ? 127 : i < 2 * k ? 0 : Int8(Int(random.nextUInt64() % 7) - 3) }
        let product = Int8ExactProduct(QuantizedWeight(format: .int8, shape: [3, k], codes: codes.map { UInt8(bitPattern: $0) },
                                                       scales: [0.1, 0.2, 0.3]))
        XCTAssertEqual(product.chunks, [0..<1032, 1032..<2064, 2064..<3096, 3096..<4128, 4128..<5000])
        for (chunk, weights) in zip(product.chunks, product.weights) {
            XCTAssertEqual(weights.shape, [3, chunk.count])
            for n in 0..<3 {
                let bound = 128 * chunk.reduce(0) { $0 + abs(Int(codes[n * k + $1])) }
                XCTAssertLessThanOrEqual(bound, 1 << 24, "chunk \(chunk), channel \(n)")
            }
        }
    }

    /// A Linear layer with K = 5000 whose sums reach ~8 · 10⁷ (far past 2²⁴, where FP32 sums round), ordinary scales.
    func testDeepLinearEqualsIntegerReference() {
        let rows = 4, k = 5000, outputs = 5
        var random = TorchGenerator(seed: 21)
        // Channels: 127s, -128s, large positive codes (100…127), random codes, random small codes.
        var codes = [Int8](repeating: 0, count: outputs * k)
        for j in 0..<k {
            codes[j] = 127
            codes[k + j] = -128
            codes[2 * k + j] = Int8(100 + Int(random.nextUInt64() % 28))
            codes[3 * k + j] = Int8(truncatingIfNeeded: random.nextUInt64())
            codes[4 * k + j] = Int8(Int(random.nextUInt64() % 9) - 4)
        }
        let scales: [Float] = [0.0123, 0.0071, 0.0291, 0.00517, 0.113]
        let weight = QuantizedWeight(format: .int8, shape: [outputs, k], codes: codes.map { UInt8(bitPattern: $0) }, scales: scales)
        // Static amax 127: s_x = 1, so the input values are the codes. Rows: all 127, all -128, large positive, random.
        var inputCodes = [Int](repeating: 0, count: rows * k)
        for j in 0..<k {
            inputCodes[j] = 127
            inputCodes[k + j] = -128
            inputCodes[2 * k + j] = 90 + Int(random.nextUInt64() % 38)
            inputCodes[3 * k + j] = Int(random.nextUInt64() % 256) - 128
        }
        let x = Tensor(shape: [rows, k], scalars: inputCodes.map(Float.init))
        let bias = Tensor(shape: [outputs], scalars: [0.31, -1.7, 2.3, 0, -0.05])
        let layer = QuantizedLayer(name: "deep", kind: .linear, weight: weight, inputAmax: 127, smoothing: nil, outputAmax: nil)
        let linear = Linear(name: "deep", weight: weight.dequantized(), bias: bias)
        linear.executionHook = SimulatedQuantizationHook(layer)
        let simulated = linear(x)

        var expected: [Float] = []
        var roundedSomewhere = false
        for r in 0..<rows {
            for n in 0..<outputs {
                var sum = 0
                var naive: Float = 0  // what an FP32 sum in order gives
                for j in 0..<k {
                    sum += inputCodes[r * k + j] * Int(codes[n * k + j])
                    naive += Float(inputCodes[r * k + j]) * Float(codes[n * k + j])
                }
                if naive != Float(sum) { roundedSomewhere = true }
                expected.append(Float(sum) * (1 * scales[n]) + bias.scalars[n])
            }
        }
        XCTAssertTrue(roundedSomewhere, "premise: an FP32 sum of these products rounds")
        XCTAssertEqual(simulated.scalars.map(\.bitPattern), expected.map(\.bitPattern))
    }

    /// A 3×3 convolution over 160 channels (two chunks: 114 channels of 9 · 127 fit one), sums past 2²⁴.
    func testDeepConvolutionEqualsIntegerReference() {
        let c = 160, size = 6, outputs = 3, taps = 9
        var random = TorchGenerator(seed: 33)
        var codes = [Int8](repeating: 0, count: outputs * c * taps)
        for i in 0..<(c * taps) {
            codes[i] = 127
            codes[c * taps + i] = Int8(100 + Int(random.nextUInt64() % 28))
            codes[2 * c * taps + i] = Int8(truncatingIfNeeded: random.nextUInt64())
        }
        let scales: [Float] = [0.0173, 0.0029, 0.061]
        let weight = QuantizedWeight(format: .int8, shape: [outputs, c, 3, 3], codes: codes.map { UInt8(bitPattern: $0) }, scales: scales)
        let product = Int8ExactProduct(weight)
        XCTAssertEqual(product.chunks, [0..<114, 114..<160])
        // Dynamic per-sample scale (amax / 127, not a power of two); values mostly large and positive.
        let factor: Float = 0.83
        let x = Tensor(shape: [1, c, size, size], scalars: (0..<(c * size * size)).map { _ in
            Float(80 + Int(random.nextUInt64() % 48)) * factor + (random.nextUInt64() % 2 == 0 ? 0.5 : 0)
        })
        let bias = Tensor(shape: [outputs], scalars: [1.25, -0.3, 0.7])
        let layer = QuantizedLayer(name: "deep", kind: .conv2d, weight: weight, inputAmax: nil, smoothing: nil, outputAmax: nil)
        let conv = Conv2d(name: "deep", weight: weight.dequantized(), bias: bias, stride: 1, padding: 1)
        conv.executionHook = SimulatedQuantizationHook(layer)
        let simulated = conv(x)

        let amax = x.scalars.reduce(Float(0)) { max($0, abs($1)) }
        let sx = amax / 127
        let q = x.scalars.map { Int(max(-128, min(127, ($0 / sx).rounded(.toNearestOrEven)))) }
        var expected: [Float] = []
        var largest = 0
        for o in 0..<outputs {
            for oy in 0..<size {
                for ox in 0..<size {
                    var sum = 0
                    for ch in 0..<c {
                        for ky in 0..<3 {
                            for kx in 0..<3 {
                                let iy = oy - 1 + ky, ix = ox - 1 + kx
                                guard iy >= 0, ix >= 0, iy < size, ix < size else { continue }
                                sum += q[(ch * size + iy) * size + ix] * Int(codes[((o * c + ch) * 3 + ky) * 3 + kx])
                            }
                        }
                    }
                    largest = max(largest, abs(sum))
                    expected.append(Float(sum) * (sx * scales[o]) + bias.scalars[o])
                }
            }
        }
        XCTAssertGreaterThan(largest, 1 << 24, "premise: sums past 2²⁴")
        XCTAssertEqual(simulated.shape, [1, outputs, size, size])
        XCTAssertEqual(simulated.scalars.map(\.bitPattern), expected.map(\.bitPattern))
    }
}

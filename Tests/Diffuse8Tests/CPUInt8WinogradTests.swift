import XCTest
@testable import Diffuse8

/// The AVX2 kernel's 3×3 convolutions by Winograd F(2×2, 3×3) in integers (`CPUInt8WinogradConvolution`): the same exact
/// sums as the direct convolution, at the largest codes and channel count it accepts, and over several blocks of tiles.
/// (Ordinary shapes are checked against the simulation with every variant in `CPUInt8KernelTests`.)
final class CPUInt8WinogradTests: XCTestCase {
    /// 3640 channels (the limit) of code −128 through weights of code −128 and 127 (9 outputs: a vector of 8 and one
    /// more): the sums are taps · 3640 · 128 · w (taps: 4 in a corner, 6 on an edge, 9 in the middle of a 3×3 image),
    /// up to 536 739 840, computed here by hand.
    func testLargestSumsAtTheChannelLimit() throws {
        guard CPUInt8Kernel.avx2.isSupported else { throw XCTSkip("this CPU (or architecture) lacks AVX2") }
        let c = CPUInt8WinogradConvolution.maximumChannels, size = 3
        let outputs = 9
        let weightCodes: [Int8] = (0..<outputs).map { $0 % 3 == 1 ? 127 : -128 }
        let codes = weightCodes.flatMap { [Int8](repeating: $0, count: c * 9) }
        let scales = (0..<outputs).map { Float($0 + 1) * 0.125 }
        let weight = QuantizedWeight(format: .int8, shape: [outputs, c, 3, 3], codes: codes.map { UInt8(bitPattern: $0) }, scales: scales)
        XCTAssertTrue(CPUInt8WinogradConvolution.applies(weightShape: weight.shape, stride: 1, padding: 1))
        let layer = QuantizedLayer(name: "w", kind: .conv2d, weight: weight, inputAmax: 127, smoothing: nil, outputAmax: nil)
        let bias = (0..<outputs).map { Float($0) * 0.75 - 3 }
        let conv = Conv2d(name: "w", weight: weight.dequantized(), bias: Tensor(shape: [outputs], scalars: bias), stride: 1, padding: 1)
        // s_x = 1; −200 clamps to code −128.
        let x = Tensor(shape: [1, c, size, size], scalars: [Float](repeating: -200, count: c * size * size))
        let y = CPUInt8LayerHook(layer).run(conv, x, kernel: .avx2)
        let taps = [4, 6, 4, 6, 9, 6, 4, 6, 4]
        var expected: [Float] = []
        for o in 0..<outputs {
            for t in taps { expected.append(Float(t * c * -128 * Int(weightCodes[o])) * (1 * weight.scales[o]) + bias[o]) }
        }
        XCTAssertEqual(y.scalars, expected)
    }

    /// Tiles transformed and multiplied a block of six at a time (2 images of 11 × 11: 72 tiles in 12 blocks; 36
    /// channels: two 16-channel blocks of the transposition and input transform and 4 more; 43 outputs: 5 vectors of 8
    /// and 3 more) give the simulation's outputs bit for bit.
    func testBlocksOfTilesMatchTheSimulation() throws {
        guard CPUInt8Kernel.avx2.isSupported else { throw XCTSkip("this CPU (or architecture) lacks AVX2") }
        let saved = CPUInt8WinogradConvolution.blockBytes
        CPUInt8WinogradConvolution.blockBytes = 1
        defer { CPUInt8WinogradConvolution.blockBytes = saved }
        var g = TorchGenerator(seed: 11)
        XCTAssertTrue(CPUInt8WinogradConvolution.applies(weightShape: [43, 36, 3, 3], stride: 1, padding: 1))
        let weight = QuantizedWeight(quantizing: g.randn([43, 36, 3, 3]), format: .int8, perChannel: true)
        let x = g.randn([2, 36, 11, 11])
        let bias = g.randn([43])
        for dynamic in [false, true] {
            let layer = QuantizedLayer(name: "c", kind: .conv2d, weight: weight, inputAmax: dynamic ? nil : 2.5, smoothing: nil, outputAmax: nil)
            let simulated = Conv2d(name: "c", weight: weight.dequantized(), bias: bias, stride: 1, padding: 1)
            simulated.executionHook = SimulatedQuantizationHook(layer)
            let expected = simulated(x)
            let real = CPUInt8LayerHook(layer).run(Conv2d(name: "c", weight: weight.dequantized(), bias: bias, stride: 1, padding: 1),
                                                   x, kernel: .avx2)
            XCTAssertEqual(real.shape, expected.shape)
            XCTAssertNil(CPUInt8KernelTests.firstDifference(real.scalars, expected.scalars), "dynamic \(dynamic)")
        }
    }
}

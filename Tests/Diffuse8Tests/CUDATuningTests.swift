import XCTest
@testable import Diffuse8

/// On the GPU: INT8 Linear layers of one shape share one timed GEMM choice, and a second context started from the
/// first one's saved choices (as a later process would) times nothing, takes the same path and gives the same
/// output; a recorded choice that no longer exists is timed again. Skipped without an NVIDIA GPU.
final class CUDATuningTests: XCTestCase {
    /// A fresh context (its own tuning table, as a new process has) with `table` as its tuning choices.
    private func kernels(_ table: CUDATuningTable) throws -> CUDAKernels {
        let context: CUDAContext
        do { context = try CUDAContext(deviceIndex: 0) } catch let error as CUDAError { throw XCTSkip("no CUDA GPU: \(error)") }
        context.tuning = table
        return try CUDAKernels(context: context)
    }

    /// Values in [-1, 1) from a fixed linear congruential sequence, rounded to FP16 (exact on the device).
    private func values(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
        var state = seed
        let scalars = (0..<shape.reduce(1, *)).map { _ -> Float in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Float16(Float(Int64(state >> 33) - (1 << 30)) / Float(1 << 30) * scale))
        }
        return Tensor(shape: shape, scalars: scalars)
    }

    /// Two INT8 layers of the same shape (different weights) on one input: outputs and the paths that ran.
    private func runTwoLayers(_ kernels: CUDAKernels) throws -> (outputs: [Tensor], paths: [CUDAEightBitLinear.GEMMPath?]) {
        let (rows, k, n) = (256, 320, 640)
        let x = values([rows, k], seed: 1)
        var outputs: [Tensor] = [], paths: [CUDAEightBitLinear.GEMMPath?] = []
        for seed in [UInt64(2), 3] {
            let weight = values([n, k], seed: seed, scale: 0.05), bias = values([n], seed: seed + 10)
            let layer = QuantizedLayer(name: "layer\(seed)", kind: .linear, weight: QuantizedWeight(quantizing: weight, format: .int8, perChannel: true),
                                       inputAmax: 0.9, smoothing: nil, outputAmax: nil)
            let w = try CUDAEightBitLinear(kernels, Linear(name: "layer\(seed)", weight: layer.weight.dequantized(), bias: bias), layer)
            let y = try kernels.eightBitLinear(try kernels.upload(x), w, residual: nil)
            XCTAssertNil(w.fallbackReason)
            outputs.append(try kernels.context.download(y))
            paths.append(w.lastGEMMPath)
        }
        return (outputs, paths)
    }

    func testLayersShareOneChoiceAndALaterContextReusesItWithoutTiming() throws {
        var saved: [String: String] = [:]
        let first = CUDATuningTable { saved = $0 }
        let firstKernels = try kernels(first)
        let (expected, firstPaths) = try runTwoLayers(firstKernels)
        let int8Keys = saved.keys.filter { $0.hasPrefix("int8-linear ") }
        XCTAssertEqual(int8Keys.count, 1, "one problem, timed once for both layers: \(saved.keys.sorted())")
        XCTAssertEqual(firstPaths[0], firstPaths[1])
        guard let key = int8Keys.first else { return }
        XCTAssertEqual(first.decided(key)?.source, .timed)

        let second = CUDATuningTable(hints: saved)
        let (outputs, secondPaths) = try runTwoLayers(try kernels(second))
        XCTAssertEqual(second.statistics.timed, 0, second.summary)
        XCTAssertEqual(second.decided(key)?.source, .recorded)
        XCTAssertEqual(secondPaths, firstPaths)
        for (y, reference) in zip(outputs, expected) { XCTAssertEqual(y.scalars, reference.scalars, "same path, same output") }

        // A recorded path this build does not have: dropped and timed again, with a correct output.
        var stale = saved
        stale[key] = "wgmma 256 99 ping-pong"
        let third = CUDATuningTable(hints: stale)
        let (again, _) = try runTwoLayers(try kernels(third))
        XCTAssertEqual(third.decided(key)?.source, .timed)
        XCTAssertGreaterThanOrEqual(third.statistics.rejected, 1)
        for (y, reference) in zip(again, expected) { XCTAssertLessThan(y.relativeL2(to: reference), 1e-3) }
    }
}

import XCTest
@testable import Diffuse8

/// The optimised CPU kernels against PyTorch outputs recorded by `tools/reference/cpu_kernels.py`
/// (`Tests/Fixtures/reference/cpu_kernels.safetensors`). Inputs come from the same integer formula on
/// both sides (`pattern`), so only outputs are stored. Tolerance: 1e-5 relative L2.
final class CPUKernelReferenceTests: XCTestCase {
    static let tolerance = 1e-5

    /// value[i] = Float(((i·7919 + seed·104729) mod 2003) / 1001.5 − 1) · scale + offset, in Double.
    func pattern(_ shape: [Int], _ seed: Int, scale: Double = 1, offset: Double = 0) -> Tensor {
        let count = shape.reduce(1, *)
        var values = [Float](repeating: 0, count: count)
        for i in 0..<count {
            let integer: Int = (i * 7919 + seed * 104729) % 2003
            let unit: Double = Double(integer) / 1001.5 - 1.0
            values[i] = Float(unit * scale + offset)
        }
        return Tensor(shape: shape, scalars: values)
    }

    func check(_ actual: Tensor, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try Fixtures.reference("cpu_kernels").tensor(named: name)
        XCTAssertEqual(actual.shape, expected.shape, "\(name) shape", file: file, line: line)
        guard actual.shape == expected.shape else { return }
        let error = actual.relativeL2(to: expected)
        XCTAssertLessThan(error, Self.tolerance, "\(name): relative L2 \(error)", file: file, line: line)
    }

    /// Runs `body` with 1 and with 2 worker threads (the serial and the parallel paths).
    func withThreadCounts(_ body: () throws -> Void) rethrows {
        let saved = CPUConfiguration.threadCount
        defer { CPUConfiguration.threadCount = saved }
        for threads in [1, 2, 3] {
            CPUConfiguration.threadCount = threads
            try body()
        }
    }

    /// Runs `body` with every FP32 micro-kernel variant this CPU can run (forced), each with 1–3 threads.
    func withKernelVariants(_ body: () throws -> Void) rethrows {
        for kernel in CPUFloatKernel.allCases where kernel.isSupported {
            CPUFloatKernel.forced = kernel
            defer { CPUFloatKernel.forced = nil }
            try withThreadCounts(body)
        }
    }

    /// The variants the loops above cannot run here, named (every one runs on an AVX-512 x86-64 CPU).
    func testEveryFloatKernelVariantIsSupported() throws {
        XCTAssertTrue(CPUFloatKernel.portable.isSupported)
        XCTAssertTrue(CPUFloatKernel.active.isSupported)
        let missing = CPUFloatKernel.allCases.filter { !$0.isSupported }.map(\.rawValue)
        if !missing.isEmpty { throw XCTSkip("this CPU (or architecture) cannot run the FP32 kernels \(missing)") }
    }

    func testLinear() throws {
        try withKernelVariants {
            try check(CPUKernels.linear(pattern([3, 5, 37], 1), weight: pattern([29, 37], 2, scale: 0.2),
                                        bias: pattern([29], 3)), "linear_small")
            try check(CPUKernels.linear(pattern([101, 300], 4), weight: pattern([390, 300], 5, scale: 0.1),
                                        bias: pattern([390], 6)), "linear_tiled")
        }
    }

    /// `Gemm.multiply` (B row-major [K, N]) against the same product as `linear_tiled`.
    func testGemmRowMajorB() throws {
        let x = pattern([101, 300], 4), w = pattern([390, 300], 5, scale: 0.1), b = pattern([390], 6)
        // wᵀ as [K, N] row-major.
        var wt = [Float](repeating: 0, count: 300 * 390)
        for j in 0..<390 { for p in 0..<300 { wt[p * 390 + j] = w.scalars[j * 300 + p] } }
        try withKernelVariants {
            let y = Tensor(shape: [101, 390]) { out in
                x.scalars.withUnsafeBufferPointer { xp in wt.withUnsafeBufferPointer { wp in b.scalars.withUnsafeBufferPointer { bp in
                    Gemm.multiply(m: 101, n: 390, k: 300, a: xp.baseAddress!, lda: 300, b: wp.baseAddress!, ldb: 390,
                                  bLayout: .rowMajor, c: out.baseAddress!, ldc: 390, bias: .perColumn(bp.baseAddress!))
                } } }
            }
            try check(y, "linear_tiled")
        }
    }

    func testConvolutions() throws {
        let cases: [(String, Int, Int, Int, Int, Int, Int, Int, Int, Int)] = [
            ("conv1x1", 2, 13, 17, 19, 23, 1, 1, 0, 10), ("conv1x1_s2_p1", 2, 13, 17, 9, 11, 1, 2, 1, 11),
            ("conv3x3_s2_p1", 2, 5, 7, 9, 11, 3, 2, 1, 12), ("conv3x3_p0", 1, 6, 5, 8, 7, 3, 1, 0, 13),
            ("conv3x3_tiled", 1, 30, 98, 20, 20, 3, 1, 1, 14),
        ]
        try withKernelVariants {
            for (name, n, c, o, h, w, k, stride, padding, seed) in cases {
                let x = pattern([n, c, h, w], seed)
                let weight = pattern([o, c, k, k], seed + 100, scale: 0.3)
                try check(CPUKernels.conv2d(x, weight: weight, bias: pattern([o], seed + 200), stride: stride, padding: padding), name)
            }
        }
    }

    /// Winograd F(4×4, 3×3) against the PyTorch outputs: edge tiles (H, W not multiples of 4), tile rows
    /// of more than 16 tiles, batch 2, no bias, an image smaller than one tile. Run with the default temporaries and
    /// with tiny ones, which split the input channels into chunks (accumulated products) and the tiles into blocks of
    /// tile rows.
    func testWinogradConvolutions() throws {
        let cases: [(String, Int, Int, Int, Int, Int, Bool, Int)] = [
            ("winograd_odd", 2, 19, 21, 13, 11, true, 15), ("winograd_wide", 1, 40, 70, 9, 70, true, 16),
            ("winograd_nobias", 2, 7, 5, 6, 5, false, 17), ("winograd_small", 1, 3, 2, 1, 2, true, 18),
            ("conv3x3_tiled", 1, 30, 98, 20, 20, true, 14),
        ]
        let savedBlock = WinogradConvolution.blockFloats
        defer { WinogradConvolution.blockFloats = savedBlock }
        for block in [savedBlock, 36 * 16 * 40] {
            WinogradConvolution.blockFloats = block
            try withThreadCounts {
                for (name, n, c, o, h, w, hasBias, seed) in cases {
                    let x = pattern([n, c, h, w], seed)
                    let weight = pattern([o, c, 3, 3], seed + 100, scale: 0.3)
                    let bias = hasBias ? pattern([o], seed + 200) : nil
                    try check(CPUKernels.conv2d(x, weight: weight, bias: bias, padding: 1, algorithm: .winograd), name)
                }
            }
        }
    }

    /// A 3×3 box filter of ones on a 5×6 image of ones, bias 0.5, by hand: each output counts the input pixels
    /// under the filter (9 inside, 6 on an edge, 4 in a corner) plus the bias.
    func testWinogradBoxFilterByHand() {
        let y = CPUKernels.conv2d(Tensor(shape: [1, 1, 5, 6], scalars: [Float](repeating: 1, count: 30)),
                                  weight: Tensor(shape: [1, 1, 3, 3], scalars: [Float](repeating: 1, count: 9)),
                                  bias: Tensor(shape: [1], scalars: [0.5]), padding: 1, algorithm: .winograd)
        XCTAssertEqual(y.shape, [1, 1, 5, 6])
        for row in 0..<5 {
            for column in 0..<6 {
                let covered = (row == 0 || row == 4 ? 2 : 3) * (column == 0 || column == 5 ? 2 : 3)
                XCTAssertEqual(y.scalars[row * 6 + column], Float(covered) + 0.5, accuracy: 1e-5, "(\(row), \(column))")
            }
        }
    }

    /// Linear and Conv2d layers compute with their weight packed once (per kernel variant): the same PyTorch outputs,
    /// the weight reads back unchanged from the pack, and assigning a new weight (LoRA merging) replaces the pack.
    func testLayersWithPackedWeights() throws {
        let linearWeight = pattern([390, 300], 5, scale: 0.1)
        let linear = Linear(name: "linear", weight: pattern([390, 300], 99), bias: pattern([390], 6))
        _ = linear(pattern([3, 300], 4))  // packs the wrong weight first
        linear.weight = linearWeight
        let convWeight = pattern([98, 30, 3, 3], 114, scale: 0.3), pointwiseWeight = pattern([17, 13, 1, 1], 110, scale: 0.3)
        let conv = Conv2d(name: "conv", weight: pattern([98, 30, 3, 3], 99), bias: pattern([98], 214), stride: 1, padding: 1)
        _ = conv.fullPrecision(pattern([1, 30, 4, 4], 1))
        conv.weight = convWeight
        let pointwise = Conv2d(name: "pointwise", weight: pointwiseWeight, bias: pattern([17], 210))
        try withKernelVariants {
            try check(linear(pattern([101, 300], 4)), "linear_tiled")
            try check(conv.fullPrecision(pattern([1, 30, 20, 20], 14)), "conv3x3_tiled")  // the im2col GEMM
            try check(conv(pattern([1, 30, 20, 20], 14)), "conv3x3_tiled")  // whichever algorithm the layer picks
            try check(pointwise(pattern([2, 13, 19, 23], 10)), "conv1x1")
            XCTAssertEqual(linear.weight.scalars, linearWeight.scalars)
            XCTAssertEqual(conv.weight.scalars, convWeight.scalars)
            XCTAssertEqual(conv.weight.shape, [98, 30, 3, 3])
            XCTAssertEqual(pointwise.weightShape, [17, 13, 1, 1])
        }
    }

    func testAttention() throws {
        let cases: [(String, Int, Int, Int, Int, Int, Float?, Int)] = [
            ("attention_cross", 2, 50, 37, 3, 8, nil, 20), ("attention_long", 1, 130, 300, 2, 16, 0.3, 21),
            ("attention_self", 2, 70, 70, 1, 40, nil, 22), ("attention_wide", 1, 20, 800, 2, 8, nil, 23),
        ]
        try withKernelVariants {
            for (name, b, lq, lk, heads, d, scale, seed) in cases {
                let q = pattern([b, lq, heads * d], seed, scale: 2)
                let k = pattern([b, lk, heads * d], seed + 1, scale: 2)
                let v = pattern([b, lk, heads * d], seed + 2)
                try check(CPUKernels.attention(query: q, key: k, value: v, heads: heads, scale: scale), name)
            }
        }
    }

    func testNorms() throws {
        try withThreadCounts {
            let x = pattern([2, 12, 7, 5], 30, scale: 2, offset: 3)
            let w = pattern([12], 31, scale: 0.5, offset: 1), b = pattern([12], 32)
            try check(CPUKernels.groupNorm(x, groups: 4, weight: w, bias: b, epsilon: 1e-5), "groupnorm")
            try check(CPUKernels.groupNorm(x, groups: 4, weight: w, bias: b, epsilon: 1e-5, fusedSiLU: true), "groupnorm_silu")
            let y = pattern([3, 7, 45], 33, scale: 2, offset: -1.5)
            try check(CPUKernels.layerNorm(y, weight: pattern([45], 34, scale: 0.5, offset: 1), bias: pattern([45], 35),
                                           epsilon: 1e-5), "layernorm")
        }
    }

    func testActivations() throws {
        try withThreadCounts {
            let x = pattern([1000], 40, scale: 30)
            try check(CPUKernels.silu(x), "silu")
            try check(CPUKernels.gelu(x), "gelu")
            try check(CPUKernels.quickGELU(x), "quick_gelu")
            try check(CPUKernels.geglu(pattern([2, 5, 74], 41, scale: 4)), "geglu")
            try check(CPUKernels.softmax(pattern([4, 33], 42, scale: 40)), "softmax")
        }
    }
}

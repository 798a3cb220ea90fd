import XCTest
import Foundation
@testable import Diffuse8

/// The CPU's vector helpers against their definitions: the packed-A layout written out index by index, the softmax
/// numerator against `exp` in double precision, the lane sum against a double sum.
final class CPUVectorKernelTests: XCTestCase {
    /// Every A sliver layout the kernels use (MR 6 and 12, and one other even height), full and partial slivers,
    /// depths with and without a tail of 8: out[s·MR·depth + p·MR + r] = A(s·MR + r, p), zero past the last row.
    func testPackedAMatchesItsDefinition() {
        for mr in [6, 8, 12] {
            for rows in [1, 5, 6, 12, 13, 30] {
                for depth in [1, 7, 8, 9, 16, 37] {
                    let lda = depth + 3
                    let a = (0..<(rows * lda)).map { Float($0) * 0.5 - 17 }
                    let padded = (rows + mr - 1) / mr * mr
                    var packed = [Float](repeating: .nan, count: padded * depth)
                    a.withUnsafeBufferPointer { ap in
                        packed.withUnsafeMutableBufferPointer { out in
                            GemmPacking.packA(ap.baseAddress!, lda: lda, rows: rows, depth: depth, mr: mr, into: out.baseAddress!)
                        }
                    }
                    var expected = [Float](repeating: 0, count: padded * depth)
                    for i in 0..<rows {
                        for p in 0..<depth { expected[(i / mr) * mr * depth + p * mr + i % mr] = a[i * lda + p] }
                    }
                    XCTAssertEqual(packed, expected, "MR \(mr), \(rows) rows, depth \(depth)")
                }
            }
        }
    }

    /// exp(scale·(x − max)) per element and their sum, for rows with and without a tail of 8 or 16, with the native
    /// loop (where the CPU has it) and the portable one: relative error ≤ 1e-6 against `exp` in double precision.
    func testExponentiateRowMatchesDoublePrecisionExp() {
        let saved = VectorMath.usesNativeExponentiateRow
        defer { VectorMath.usesNativeExponentiateRow = saved }
        var generator = SystemRandomNumberGenerator()
        for native in [false, saved] {
            VectorMath.usesNativeExponentiateRow = native
            for count in [1, 3, 8, 15, 16, 17, 40, 77, 256] {
                let values = (0..<count).map { _ in Float.random(in: -30...30, using: &generator) }
                let scale: Float = 0.158
                var row = values + [12345]
                let sum = row.withUnsafeMutableBufferPointer { VectorMath.exponentiateRow($0.baseAddress!, count: count, scale: scale) }
                let maximum = Double(values.max()!)
                var expectedSum = 0.0
                for (i, x) in values.enumerated() {
                    let e = Foundation.exp(Double(scale) * (Double(x) - maximum))
                    expectedSum += e
                    if e > 1e-30 { XCTAssertEqual(Double(row[i]), e, accuracy: 1e-6 * e, "native \(native), \(count) values, #\(i)") }
                }
                XCTAssertEqual(Double(sum), expectedSum, accuracy: 1e-6 * expectedSum, "native \(native), \(count) values")
                XCTAssertEqual(row[count], 12345, "native \(native): wrote past \(count) values")
            }
        }
    }

    func testLaneSumMatchesDoubleSum() {
        let lanes: [Float] = (0..<16).map { Float($0) * 1.25 - 7.5 + (Float($0 % 3) * 1e-3) }
        let expected = lanes.reduce(0.0) { $0 + Double($1) }
        XCTAssertEqual(Double(VectorMath.sum(SIMD16(lanes))), expected, accuracy: 1e-5)
    }
}

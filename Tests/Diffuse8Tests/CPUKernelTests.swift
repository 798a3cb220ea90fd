import XCTest
@testable import Diffuse8

final class CPUKernelTests: XCTestCase {
    /// 2×3 · (2×3)ᵀ computed by hand.
    func testLinearMatchesHandComputation() {
        let x = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        let w = Tensor(shape: [2, 3], scalars: [1, 0, -1, 0.5, 0.5, 0.5])
        let y = CPUKernels.linear(x, weight: w, bias: Tensor(shape: [2], scalars: [10, 20]))
        XCTAssertEqual(y.shape, [2, 2])
        XCTAssertEqual(y.scalars, [8, 23, 8, 27.5] as [Float])  // [1-3+10, 3+20, 4-6+10, 7.5+20]
    }

    /// A 3×3 all-ones kernel with padding 1 on a 3×3 ramp: each output is the sum of its neighbourhood.
    func testConvSumsNeighbourhood() {
        let x = Tensor(shape: [1, 1, 3, 3], scalars: (1...9).map(Float.init))
        let w = Tensor(shape: [1, 1, 3, 3], scalars: [Float](repeating: 1, count: 9))
        let y = CPUKernels.conv2d(x, weight: w, bias: nil, stride: 1, padding: 1)
        XCTAssertEqual(y.scalars, [12, 21, 16, 27, 45, 33, 24, 39, 28])
    }
}

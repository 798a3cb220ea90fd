import XCTest
@testable import Diffuse8
import Diffuse8Checks

/// FP16 `CUDAUNet` vs. the FP32 CPU `UNet2DConditionModel` on the tiny fixtures (SD1.x conv projections and
/// SDXL linear projections + text_time), within the 5e-3 relative L2. Skipped without an NVIDIA GPU.
final class CUDAUNetTests: XCTestCase {
    private func kernels() throws -> CUDAKernels {
        do { return try CUDAKernels() } catch let error as CUDAError { throw XCTSkip("no CUDA GPU: \(error)") }
    }

    func testTinySD15MatchesCPU() throws {
        let p = try CUDAUNetCheck.parity(directory: Fixtures.path("tiny-sd15/unet"), kernels: kernels(), height: 16, width: 16)
        XCTAssertTrue(p.passed, "rel. L2 \(p.relativeL2), \(p.nonFinite) non-finite")
    }

    func testTinySDXLMatchesCPU() throws {
        let p = try CUDAUNetCheck.parity(directory: Fixtures.path("tiny-sdxl/unet"), kernels: kernels(), height: 16, width: 16)
        XCTAssertTrue(p.passed, "rel. L2 \(p.relativeL2), \(p.nonFinite) non-finite")
    }

    /// The channels-last weight permutation ([O, C, kh, kw] → [O, kh, kw, C]) needs no GPU.
    func testChannelsLastWeightPermutation() {
        let w = Tensor(shape: [2, 3, 2, 2], scalars: (0..<24).map(Float.init))
        let last = CUDAKernels.channelsLastWeight(w)
        XCTAssertEqual(last.shape, [2, 2, 2, 3])
        for o in 0..<2 { for c in 0..<3 { for y in 0..<2 { for x in 0..<2 {
            XCTAssertEqual(last.scalars[((o * 2 + y) * 2 + x) * 3 + c], w.scalars[((o * 3 + c) * 2 + y) * 2 + x])
        } } } }
    }
}

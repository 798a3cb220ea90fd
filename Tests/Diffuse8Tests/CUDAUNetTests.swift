import XCTest
@testable import Diffuse8

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
}

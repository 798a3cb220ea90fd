import XCTest
@testable import Diffuse8
import Diffuse8Checks

/// The GPU tests: every CUDA kernel against the CPU reference kernels (see `CUDASelfTest`).
/// Skipped, saying why, on machines without an NVIDIA driver/GPU (CI), so the suite still passes there.
final class CUDASelfTests: XCTestCase {
    func testEveryKernelMatchesTheCPUReference() throws {
        let kernels: CUDAKernels
        do {
            kernels = try CUDAKernels()
        } catch let error as CUDAError {
            throw XCTSkip("no CUDA GPU: \(error)")
        }
        let results = CUDASelfTest.run(kernels: kernels)
        print(CUDASelfTest.table(results))
        for result in results {
            XCTAssertTrue(result.passed, "\(result.name) \(result.shape): rel. L2 \(result.relativeL2), "
                          + "\(result.nonFinite) non-finite, \(result.error ?? "")")
        }
    }

    /// Without CUDA the loader must fail with an error that names the missing library and the places searched.
    func testMissingDriverErrorListsSearchedPlaces() throws {
        do {
            _ = try CUDAContext.shared()
            throw XCTSkip("a CUDA driver is present; this test is for machines without one")
        } catch let error as CUDAError {
            let text = "\(error)"
            if case .libraryNotFound = error {
                XCTAssertTrue(text.contains("libcuda"), text)
                XCTAssertTrue(text.contains("Looked in:"), text)
                XCTAssertTrue(text.contains("/usr/lib/x86_64-linux-gnu") || text.contains("/usr/lib64"), text)
            }
        }
    }

    func testKernelSourcesHashDiffersWithOptions() {
        XCTAssertNotEqual(CUDAKernelCompiler.fnv1a("a\u{0}--gpu-arch=sm_90"), CUDAKernelCompiler.fnv1a("a\u{0}--gpu-arch=sm_89"))
        XCTAssertEqual(CUDAKernelCompiler.fnv1a(""), 0xcbf2_9ce4_8422_2325)
    }

    func testMemoryPoolRoundsSizes() {
        XCTAssertEqual(CUDAMemoryPool.roundedSize(1), 512)
        XCTAssertEqual(CUDAMemoryPool.roundedSize(513), 1024)
        XCTAssertEqual(CUDAMemoryPool.roundedSize((1 << 20) + 1), 2 << 20)
    }
}

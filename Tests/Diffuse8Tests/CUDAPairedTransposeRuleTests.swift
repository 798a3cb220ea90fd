import XCTest
@testable import Diffuse8

/// Which transposes back to NCHW take the paired 64×64 kernel (no GPU needed): SDXL's and SD1.5's shapes (batch 2) on a
/// 132-SM card, counted by hand.
final class CUDAPairedTransposeRuleTests: XCTestCase {
    func testSDXLShapesAllTakeThePairs() {
        // 128², 320 channels: 5 column tiles × 256 row tiles × 2 images = 2560 blocks ≥ 264.
        XCTAssertTrue(CUDAKernels.transposesInPairs(tokens: 16384, channels: 320, images: 2, multiprocessors: 132))
        // 64², 640 channels: 10 × 64 × 2 = 1280.
        XCTAssertTrue(CUDAKernels.transposesInPairs(tokens: 4096, channels: 640, images: 2, multiprocessors: 132))
        // 32², 1280 channels: 20 × 16 × 2 = 640.
        XCTAssertTrue(CUDAKernels.transposesInPairs(tokens: 1024, channels: 1280, images: 2, multiprocessors: 132))
    }

    func testSD15SmallLevelsKeepSingleHalves() {
        // 32², 640 channels: 10 × 16 × 2 = 320 ≥ 264, paired.
        XCTAssertTrue(CUDAKernels.transposesInPairs(tokens: 1024, channels: 640, images: 2, multiprocessors: 132))
        // 16², 1280 channels: 20 × 4 × 2 = 160 < 264; 8²: 20 × 1 × 2 = 40.
        XCTAssertFalse(CUDAKernels.transposesInPairs(tokens: 256, channels: 1280, images: 2, multiprocessors: 132))
        XCTAssertFalse(CUDAKernels.transposesInPairs(tokens: 64, channels: 1280, images: 2, multiprocessors: 132))
    }

    func testOddSidesAndEmptyShapesKeepSingleHalves() {
        // An odd token count (5 × 7 · 4097) or 47 channels cannot be read two halves at a time, whatever the grid.
        XCTAssertFalse(CUDAKernels.transposesInPairs(tokens: 35 * 4097, channels: 320, images: 2, multiprocessors: 1))
        XCTAssertFalse(CUDAKernels.transposesInPairs(tokens: 4096, channels: 47, images: 2, multiprocessors: 1))
        XCTAssertFalse(CUDAKernels.transposesInPairs(tokens: 0, channels: 320, images: 2, multiprocessors: 1))
        // The boundary: 2 · 132 = 264 blocks exactly (66 × 2 × 2) is enough, 262 (131 × 1 × 2) is not.
        XCTAssertTrue(CUDAKernels.transposesInPairs(tokens: 66 * 64, channels: 128, images: 2, multiprocessors: 132))
        XCTAssertFalse(CUDAKernels.transposesInPairs(tokens: 131 * 64, channels: 64, images: 2, multiprocessors: 132))
    }
}

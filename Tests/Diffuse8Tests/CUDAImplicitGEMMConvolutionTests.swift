import XCTest
@testable import Diffuse8

/// The host side of the implicit-GEMM 8-bit convolution: how an image is cut into tiles and how its path choice is
/// recorded. No GPU needed; the kernel itself is checked by `diffuse8-cuda-selftest` against the simulated layer.
final class CUDAImplicitGEMMConvolutionTests: XCTestCase {
    private let cooperative = CUDAKernels.WarpSpecializedGEMM(columns: 128, stages: 5, pingPong: false)   // 128-pixel tiles
    private let pingPong = CUDAKernels.WarpSpecializedGEMM(columns: 128, stages: 7, pingPong: true)      // 64-pixel tiles

    /// Tiles are 8, 16, 32 or 64 columns wide; the width that pads the image least wins, the widest of equals.
    /// Expected values worked out by hand: padded area = ⌈W / w⌉·w × ⌈H / (pixels / w)⌉·(pixels / w).
    func testTheTileWidthPadsTheImageLeast() {
        // 128²: 64 × 2 and 32 × 4 both tile it exactly; the wider wins.
        XCTAssertEqual(CUDAKernels.convolutionTileWidth(cooperative, height: 128, width: 128), 64)
        // 32²: 64 wide pads to 64 × 32 = 2048 pixels, 32 wide is exact (1024).
        XCTAssertEqual(CUDAKernels.convolutionTileWidth(cooperative, height: 32, width: 32), 32)
        // 20²: 64 → 64 × 20 = 1280, 32 → 32 × 20 = 640, 16 → 32 × 24 = 768, 8 → 24 × 32 = 768.
        XCTAssertEqual(CUDAKernels.convolutionTileWidth(cooperative, height: 20, width: 20), 32)
        // 96²: 64 → 128 × 96, 32 → 96 × 96 (exact).
        XCTAssertEqual(CUDAKernels.convolutionTileWidth(cooperative, height: 96, width: 96), 32)
        // 8² in 64-pixel tiles: 8 × 8 is exact, every wider tile pads the width.
        XCTAssertEqual(CUDAKernels.convolutionTileWidth(pingPong, height: 8, width: 8), 8)
        // One row of 200 in 64-pixel tiles: 64 → 256 × 1, 32 → 224 × 2, 16 → 208 × 4, 8 → 200 × 8.
        XCTAssertEqual(CUDAKernels.convolutionTileWidth(pingPong, height: 1, width: 200), 64)
        // 24 × 40 in 128-pixel tiles: 64 → 64 × 24 = 1536, 32 → 64 × 24 = 1536, 16 → 48 × 24 = 1152, 8 → 40 × 32 = 1280.
        XCTAssertEqual(CUDAKernels.convolutionTileWidth(cooperative, height: 24, width: 40), 16)
    }

    /// A recorded convolution path names cuDNN, one of our tile variants, or 16 bit with its reason, and reads back
    /// as the same path; a variant this build does not have is not a path.
    func testPathChoicesRoundTripThroughTheirTuningCodes() {
        var paths: [CUDAEightBitConvolution.Path] = [.sixteenBit(""), .sixteenBit("16 bit measured faster (40.0 vs 52.1 µs)")]
        paths += CUDAKernels.WarpSpecializedGEMM.variants.map { .warpSpecialized($0) }
        for path in paths {
            XCTAssertEqual(CUDAEightBitConvolution.Path(tuningCode: path.tuningCode), path, path.tuningCode)
        }
        XCTAssertEqual(CUDAEightBitConvolution.Path(tuningCode: "8bit"), .eightBit(.fusedEpilogue))
        XCTAssertEqual(CUDAEightBitConvolution.Path.warpSpecialized(cooperative).tuningCode, "wgmma 128 5 cooperative")
        XCTAssertEqual(CUDAEightBitConvolution.Path.warpSpecialized(.init(columns: 128, stages: 4, pingPong: true, pingPongRows: 128)).tuningCode,
                       "wgmma 128 4 ping-pong 128")
        XCTAssertNil(CUDAEightBitConvolution.Path(tuningCode: "wgmma 96 4 cooperative"))
        XCTAssertNil(CUDAEightBitConvolution.Path(tuningCode: "implicit"))
    }

    /// FP8 sums deeper than 1280 products (every SDXL 3×3 convolution: 9 · 320 = 2880 and up) keep FP32 totals beside
    /// the accumulators: the 128×256 tile (128 accumulators a thread) would need 256 registers for both, more than a
    /// consumer has, so it is not one of their variants; the 128×160 and 128×192 tiles (up to 96 + 96) are. INT8 sums
    /// are exact in INT32 and keep every variant. GEGLU needs tiles whose halves fill whole 64-column store boxes: not
    /// 128×160 or 128×192.
    func testDeepFP8SumsLeaveOutTheTileWithoutRegistersForTotals() {
        typealias GEMM = CUDAKernels.WarpSpecializedGEMM
        XCTAssertEqual(GEMM.variants(.int8, depth: 9 * 1280), GEMM.variants)
        XCTAssertEqual(GEMM.variants(.fp8, depth: 9 * 320).map(\.columns).sorted(), [64, 128, 128, 160, 192])
        XCTAssertEqual(GEMM.variants(.fp8, depth: 1280), GEMM.variants)
        XCTAssertEqual(GEMM.variants(.fp8, depth: 1296).map(\.columns).sorted(), [64, 128, 128, 160, 192])
        XCTAssertEqual(GEMM.gegluVariants(.fp8, depth: 2048).map(\.columns), [128, 128])
        XCTAssertEqual(GEMM.gegluVariants(.int8, depth: 1280).map(\.columns), [128, 128, 128, 256])
        // the 128-row ping-pong tile holds 2 × 64 accumulators a thread, as many as the 128×256 cooperative one
        XCTAssertFalse(GEMM(columns: 128, stages: 4, pingPong: true, pingPongRows: 128).holdsTotals)
        XCTAssertTrue(GEMM(columns: 128, stages: 7, pingPong: true).holdsTotals)
        XCTAssertFalse(GEMM.promotesSums(.int8, depth: 9 * 1280))
        XCTAssertFalse(GEMM.promotesSums(.fp8, depth: 1 * 320))
    }
}

import XCTest
@testable import Diffuse8

/// The wgmma GEMM's dynamic shared memory per variant. No GPU needed: a variant that outgrew Hopper's limit would not
/// fail loudly on the card, it would turn the kernel off there (`runsWarpSpecializedGEMM`) and leave every 8-bit layer
/// to the libraries.
final class CUDAWarpSpecializedGEMMLayoutTests: XCTestCase {
    /// Compute capability 9.0 gives a block at most 227 KB of shared memory (CUDA C++ Programming Guide, technical
    /// specifications per compute capability). Expected bytes worked out by hand: the ring, stages × (rows + columns) ×
    /// 128; the two consumers' output buffers, 2 × (rows a consumer stores: 64, or a 128-row ping-pong tile's 128) ×
    /// columns × 2; 1024 bytes of alignment slack; the mbarriers, 16 × stages + 32; and, where all of that still fits,
    /// the two consumers' epilogue operands, 2 × columns × 12.
    func testEveryVariantFitsHopperAndKeepsItsEpilogueOperandsInSharedMemoryWhereTheyFit() {
        let hopperLimit = 227 * 1024
        let expected: [(rows: Int, columns: Int, stages: Int, pingPong: Bool, bytes: Int, staged: Bool)] = [
            // 172 032 + 32 768 + 1024 + 144 = 205 968, and the operands' 3072 bytes (8 slots would leave no room for them)
            (64, 128, 7, true, 205_968 + 3072, true),
            (64, 64, 10, true, 163_840 + 16_384 + 1024 + 192 + 1536, true),
            // 4 × 256 × 128 = 131 072, 2 × 128 × 128 × 2 = 65 536
            (128, 128, 4, true, 131_072 + 65_536 + 1024 + 96 + 3072, true),
            (128, 128, 5, false, 163_840 + 32_768 + 1024 + 112 + 3072, true),
            // 5 × 288 × 128 = 184 320, 2 × 64 × 160 × 2 = 40 960: 230 256 of the 232 448
            (128, 160, 5, false, 184_320 + 40_960 + 1024 + 112 + 3840, true),
            (128, 192, 4, false, 163_840 + 49_152 + 1024 + 96 + 4608, true),
            (128, 256, 3, false, 147_456 + 65_536 + 1024 + 80 + 6144, true),
        ]
        XCTAssertEqual(CUDAKernels.WarpSpecializedGEMM.variants.count, expected.count)
        for (rows, columns, stages, pingPong, bytes, staged) in expected {
            let variant = CUDAKernels.WarpSpecializedGEMM(columns: columns, stages: stages, pingPong: pingPong, pingPongRows: pingPong ? rows : 64)
            XCTAssertEqual(variant.rows, rows, "\(variant)")
            XCTAssertTrue(CUDAKernels.WarpSpecializedGEMM.variants.contains(variant), "\(variant)")
            XCTAssertEqual(variant.sharedBytes, bytes, "\(variant)")
            XCTAssertEqual(variant.stagesEpilogue, staged, "\(variant)")
            XCTAssertLessThanOrEqual(variant.sharedBytes, hopperLimit, "\(variant)")
        }
    }

    /// The epilogue stores a tile's codes in whole TMA boxes of `codeBoxColumns` (the kernel's CODE_BOX, 32, 64 or 128
    /// bytes a row), `outputColumns / box` of them, and its 16-bit values (and loads a residual) in boxes of
    /// `outputBoxColumns` (OUT_BOX, 32 or 64 values): a box wider than the tile's remainder would leave columns unstored
    /// (a 128-byte box over the 128×192 tile's 192 columns stores 128; 64-value boxes over the 128×160 tile's 160 store
    /// 128). Plain tiles write all their columns, GEGLU tiles half (values and gates share a tile). The boxes of a
    /// consumer's tile fit in its output buffer (64 rows × `columns` 16-bit values).
    func testStoreBoxesCoverEveryTilesColumns() {
        typealias GEMM = CUDAKernels.WarpSpecializedGEMM
        for variant in GEMM.variants {
            var outputs = [variant.columns]
            if GEMM.gegluVariants.contains(variant) { outputs.append(variant.columns / 2) }
            for columns in outputs {
                let codeBox = GEMM.codeBoxColumns(outputColumns: columns), valueBox = GEMM.outputBoxColumns(outputColumns: columns)
                XCTAssertTrue([32, 64, 128].contains(codeBox), "\(variant): \(codeBox)")
                XCTAssertEqual(columns % codeBox, 0, "\(variant), \(columns) output columns: code boxes of \(codeBox)")
                XCTAssertTrue([32, 64].contains(valueBox), "\(variant): \(valueBox)")
                XCTAssertEqual(columns % valueBox, 0, "\(variant), \(columns) output columns: 16-bit boxes of \(valueBox)")
                XCTAssertLessThanOrEqual(columns / valueBox * 64 * valueBox * 2, 64 * variant.columns * 2, "\(variant)")
                XCTAssertLessThanOrEqual(columns / codeBox * 64 * codeBox, 64 * variant.columns * 2, "\(variant)")
            }
        }
        XCTAssertEqual(GEMM.codeBoxColumns(outputColumns: 160), 32)
        XCTAssertEqual(GEMM.codeBoxColumns(outputColumns: 192), 64)
        XCTAssertEqual(GEMM.codeBoxColumns(outputColumns: 256), 128)
        XCTAssertEqual(GEMM.outputBoxColumns(outputColumns: 160), 32)
        XCTAssertEqual(GEMM.outputBoxColumns(outputColumns: 192), 64)
    }
}

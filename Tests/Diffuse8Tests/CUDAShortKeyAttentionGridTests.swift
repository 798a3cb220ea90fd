import XCTest
@testable import Diffuse8

/// How many blocks the short-key attention kernel gets per (batch, head) (no GPU needed): SDXL's cross-attention shapes
/// on a 132-SM card by hand, and the one-wave, even-share rule over a sweep of shapes.
final class CUDAShortKeyAttentionGridTests: XCTestCase {
    func testSDXLCrossAttentionLevels() {
        // 32²: 1024 queries = 64 tiles of 16, 40 (image, head) pairs = 2560 tiles; one wave holds 3 · 132 blocks of 4
        // warps = 1584 warps, so 2 tiles per warp and 64 / (4 · 2) = 8 blocks per pair (320 blocks).
        XCTAssertEqual(CUDAKernels.shortKeyBlocks(queries: 1024, batchHeads: 40, multiprocessors: 132), 8)
        // 64²: 4096 queries = 256 tiles, 20 pairs = 5120 tiles: 4 tiles per warp, 256 / 16 = 16 blocks per pair (320).
        XCTAssertEqual(CUDAKernels.shortKeyBlocks(queries: 4096, batchHeads: 20, multiprocessors: 132), 16)
        // SD1.5 64²: 256 tiles, 16 pairs = 4096 tiles: 3 tiles per warp, ⌈256 / 12⌉ = 22 blocks per pair.
        XCTAssertEqual(CUDAKernels.shortKeyBlocks(queries: 4096, batchHeads: 16, multiprocessors: 132), 22)
    }

    func testOneWaveAndAnEvenShare() {
        for (queries, pairs, sms) in [(1, 1, 132), (77, 2, 132), (1000, 10, 132), (4096, 20, 78), (16384, 16, 132), (333, 3, 8)] {
            let blocks = CUDAKernels.shortKeyBlocks(queries: queries, batchHeads: pairs, multiprocessors: sms)
            let tiles = (queries + 15) / 16
            // Every tile has a warp, and no block is idle: the last block's first tile exists.
            XCTAssertGreaterThanOrEqual(blocks, 1)
            XCTAssertLessThan(4 * (blocks - 1), tiles, "\(queries) queries, \(pairs) pairs")
            // No warp takes more tiles than an even share over one wave of 3 blocks per SM (rounded up).
            let perWarp = (tiles + 4 * blocks - 1) / (4 * blocks)
            let evenShare = (tiles * pairs + 12 * sms - 1) / (12 * sms)
            XCTAssertLessThanOrEqual(perWarp, max(evenShare, 1), "\(queries) queries, \(pairs) pairs")
            // Where the tiles exceed one wave's warps, the blocks overfill that wave by at most one per pair (rounding).
            if tiles * pairs > 12 * sms { XCTAssertLessThanOrEqual(blocks * pairs, 3 * sms + pairs, "\(queries) queries, \(pairs) pairs") }
        }
    }
}

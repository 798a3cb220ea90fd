import XCTest
@testable import Diffuse8

/// How cuDNN's FP8 attention is split into calls of at most one wave of 128-query tiles (no GPU needed): offsets by
/// hand for SDXL's two self-attention levels on a 132-SM card, and coverage over a sweep of shapes.
final class CUDAFP8AttentionCallTests: XCTestCase {
    typealias Call = CUDAKernels.FP8AttentionCall

    func testSDXL4096TokenLevelRunsFourHeadsPerCall() {
        // 10 heads of 64 from a stacked [q | k | v] of 3 × 640: 32 tiles per head, so 4 heads (128 tiles) per call.
        let calls = CUDAKernels.fp8AttentionCalls(batch: 2, heads: 10, headDim: 64, queries: 4096, keys: 4096, queryStride: 1920,
                                                  keyValueStride: 1920, multiprocessors: 132)
        XCTAssertEqual(calls.count, 6)
        XCTAssertEqual(calls[0], Call(image: 0, firstHead: 0, heads: 4, queryOffset: 0, keyValueOffset: 0, outputOffset: 0))
        XCTAssertEqual(calls[1], Call(image: 0, firstHead: 4, heads: 4, queryOffset: 256, keyValueOffset: 256, outputOffset: 256))
        // Image 1 starts 4096 rows later: 4096 · 1920 bytes in the stack, 4096 · 640 in the output; head 8 at byte 512.
        XCTAssertEqual(calls[5], Call(image: 1, firstHead: 8, heads: 2, queryOffset: 7_864_832, keyValueOffset: 7_864_832,
                                      outputOffset: 2_621_952))
    }

    func testSDXL1024TokenLevelRunsSixteenHeadsPerCall() {
        // 20 heads of 64, 8 tiles each: 16 heads (128 tiles), then the other 4.
        let calls = CUDAKernels.fp8AttentionCalls(batch: 2, heads: 20, headDim: 64, queries: 1024, keys: 1024, queryStride: 3840,
                                                  keyValueStride: 3840, multiprocessors: 132)
        XCTAssertEqual(calls.map(\.heads), [16, 4, 16, 4])
        XCTAssertEqual(calls[3], Call(image: 1, firstHead: 16, heads: 4, queryOffset: 1024 * 3840 + 16 * 64,
                                      keyValueOffset: 1024 * 3840 + 16 * 64, outputOffset: 1024 * 1280 + 16 * 64))
    }

    func testEveryHeadOnceAndNoCallPastOneWave() {
        for (batch, heads, queries, sms) in [(1, 1, 1, 132), (2, 5, 256, 132), (2, 8, 4096, 132), (3, 7, 1000, 78), (2, 20, 16896, 132)] {
            let calls = CUDAKernels.fp8AttentionCalls(batch: batch, heads: heads, headDim: 16, queries: queries, keys: 77,
                                                      queryStride: 48 * heads, keyValueStride: 32 * heads, multiprocessors: sms)
            var covered = Set<[Int]>()
            for c in calls {
                XCTAssertLessThanOrEqual(c.heads * ((queries + 127) / 128), sms, "\(c)")
                for h in c.firstHead..<(c.firstHead + c.heads) { XCTAssertTrue(covered.insert([c.image, h]).inserted, "\(c)") }
                XCTAssertEqual(c.queryOffset, (c.image * queries) * 48 * heads + c.firstHead * 16)
                XCTAssertEqual(c.keyValueOffset, (c.image * 77) * 32 * heads + c.firstHead * 16)
            }
            XCTAssertEqual(covered.count, batch * heads, "B\(batch) H\(heads) L\(queries)")
        }
    }
}

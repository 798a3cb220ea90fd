import XCTest
@testable import Diffuse8

/// How cuDNN's FP8 attention is split into calls of at most one wave of 128-query tiles (no GPU needed): offsets by
/// hand for SDXL's two self-attention levels on a 132-SM card, and coverage over a sweep of shapes.
final class CUDAFP8AttentionCallTests: XCTestCase {
    typealias Call = CUDAKernels.FP8AttentionCall

    func testSDXL4096TokenLevelRunsTwoHeadsOfBothImagesPerCall() {
        // 10 heads of 64 from a stacked [q | k | v] of 3 × 640: 32 tiles per head, so 2 heads of both images (128 tiles)
        // per call, 5 calls.
        let calls = CUDAKernels.fp8AttentionCalls(batch: 2, heads: 10, headDim: 64, queries: 4096, keys: 4096, queryStride: 1920,
                                                  keyValueStride: 1920, multiprocessors: 132)
        XCTAssertEqual(calls.count, 5)
        XCTAssertEqual(calls[0], Call(image: 0, images: 2, firstHead: 0, heads: 2, queryOffset: 0, keyValueOffset: 0, outputOffset: 0))
        // Head 8 starts at channel 8 · 64 = 512 in Q's rows and in O's.
        XCTAssertEqual(calls[4], Call(image: 0, images: 2, firstHead: 8, heads: 2, queryOffset: 512, keyValueOffset: 512, outputOffset: 512))
    }

    func testSDXL1024TokenLevelRunsThreeEvenCalls() {
        // 20 heads of 64, 8 tiles each: at most 8 heads of both images (128 tiles) per call, so 3 calls, as 7 + 7 + 6.
        let calls = CUDAKernels.fp8AttentionCalls(batch: 2, heads: 20, headDim: 64, queries: 1024, keys: 1024, queryStride: 3840,
                                                  keyValueStride: 3840, multiprocessors: 132)
        XCTAssertEqual(calls.map(\.heads), [7, 7, 6])
        XCTAssertEqual(calls[2], Call(image: 0, images: 2, firstHead: 14, heads: 6, queryOffset: 14 * 64, keyValueOffset: 14 * 64,
                                      outputOffset: 14 * 64))
    }

    func testImagesRunOneByOneWhenAHeadOfEachExceedsAWave() {
        // 16896 queries: 132 tiles per head, a whole wave, so one image and one head per call; image 1 starts
        // 16896 rows later (rows of 3 · 320 bytes in the stack, 320 in the output).
        let calls = CUDAKernels.fp8AttentionCalls(batch: 2, heads: 5, headDim: 64, queries: 16896, keys: 16896, queryStride: 960,
                                                  keyValueStride: 960, multiprocessors: 132)
        XCTAssertEqual(calls.count, 10)
        XCTAssertEqual(calls[6], Call(image: 1, images: 1, firstHead: 1, heads: 1, queryOffset: 16896 * 960 + 64,
                                      keyValueOffset: 16896 * 960 + 64, outputOffset: 16896 * 320 + 64))
    }

    func testEveryHeadOnceAndNoCallPastOneWave() {
        for (batch, heads, queries, sms) in [(1, 1, 1, 132), (2, 5, 256, 132), (2, 8, 4096, 132), (3, 7, 1000, 78), (5, 3, 2048, 132), (3, 4, 6000, 132), (2, 20, 16896, 132)] {
            let calls = CUDAKernels.fp8AttentionCalls(batch: batch, heads: heads, headDim: 16, queries: queries, keys: 77,
                                                      queryStride: 48 * heads, keyValueStride: 32 * heads, multiprocessors: sms)
            var covered = Set<[Int]>()
            for c in calls {
                XCTAssertLessThanOrEqual(c.images * c.heads * ((queries + 127) / 128), sms, "\(c)")
                for i in c.image..<(c.image + c.images) {
                    for h in c.firstHead..<(c.firstHead + c.heads) { XCTAssertTrue(covered.insert([i, h]).inserted, "\(c)") }
                }
                XCTAssertEqual(c.queryOffset, (c.image * queries) * 48 * heads + c.firstHead * 16)
                XCTAssertEqual(c.keyValueOffset, (c.image * 77) * 32 * heads + c.firstHead * 16)
            }
            XCTAssertEqual(covered.count, batch * heads, "B\(batch) H\(heads) L\(queries)")
        }
    }

    func testOneCallWhereCuDNNRunsPastOneWave() {
        // cuDNN 9.19 (91900) runs the whole attention in one call; 9.14 (91400) gets one-wave calls.
        XCTAssertTrue(CUDAKernels.fp8AttentionRunsPastOneWave(cudnnVersion: 91900))
        XCTAssertFalse(CUDAKernels.fp8AttentionRunsPastOneWave(cudnnVersion: 91400))
        let calls = CUDAKernels.fp8AttentionCalls(batch: 2, heads: 10, headDim: 64, queries: 4096, keys: 4096, queryStride: 1920,
                                                  keyValueStride: 1920, multiprocessors: .max)
        XCTAssertEqual(calls, [Call(image: 0, images: 2, firstHead: 0, heads: 10, queryOffset: 0, keyValueOffset: 0, outputOffset: 0)])
    }
}

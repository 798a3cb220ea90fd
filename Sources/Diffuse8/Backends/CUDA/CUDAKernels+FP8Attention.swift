/// The scalars of cuDNN's FP8 attention graph: descale Q, K, V (amax / 448 of each), descale P and scale P (a_P / 448
/// and its inverse), scale O (448 / the output projection's input amax).
package struct FP8AttentionScales {
    package var descaleQ: Float, descaleK: Float, descaleV: Float, descaleP: Float, scaleP: Float, scaleO: Float
    static let count = 6
    /// Bytes between two values on the device (each scalar tensor is declared 16-byte aligned).
    static let stride = 16

    package init(descaleQ: Float, descaleK: Float, descaleV: Float, descaleP: Float, scaleP: Float, scaleO: Float) {
        (self.descaleQ, self.descaleK, self.descaleV) = (descaleQ, descaleK, descaleV)
        (self.descaleP, self.scaleP, self.scaleO) = (descaleP, scaleP, scaleO)
    }

    /// The values as FP32 on the device, each at its 16-byte slot (cuDNN reads them there).
    package func upload(to context: CUDAContext) throws -> CUDATensor {
        let layout: [Float] = [descaleQ, descaleK, descaleV, descaleP, scaleP, scaleO].flatMap { [$0, 0, 0, 0] }
        return try context.upload(Tensor(shape: [layout.count], scalars: layout), dtype: .float32)
    }
}

/// Level-4 FP8 attention through cuDNN's fused FP8 kernel (`CUDNNAttention.forwardFP8`), which runs Q·Kᵀ and P·V
/// on FP8 tensor cores (Hopper's wgmma), where our own level-4 kernel multiplies in FP16 and passes over the keys twice.
extension CUDAKernels {
    /// The signature `cudnnFP8Attention` and `wgmmaFP8Attention` share (query, query stride, key, value, key/value
    /// stride, batch, queries, keys, channels, heads, scales), for callers that pick one of them.
    package typealias FP8AttentionKernel = (UInt64, Int, UInt64, UInt64, Int, Int, Int, Int, Int, Int, CUDATensor) throws -> CUDATensor

    /// Query rows per tile of cuDNN's FP8 attention kernel on Hopper (inferred from the measurements below).
    static let fp8AttentionTileRows = 128

    /// Whether this GPU can run cuDNN's FP8 attention (compute capability 9.0 or newer) with head dim `headDim`
    /// (a multiple of 16, at most 256) on `queries` queries (one head's tiles must fit one call, see below).
    package func runsFP8Attention(headDim: Int, queries: Int) -> Bool {
        let (major, _) = context.computeCapability
        let tiles = (queries + Self.fp8AttentionTileRows - 1) / Self.fp8AttentionTileRows
        return major >= 9 && headDim % 16 == 0 && headDim <= 256 && queries > 0 && tiles <= context.multiprocessorCount
    }

    /// O = attention of E4M3 codes, as the E4M3 codes of O with the scale in `scales` (`FP8AttentionScales.upload`):
    /// [batch, queries, channels]. Rows as in `attention(query:queryStride:…)`, strides in elements (= bytes), 16-byte
    /// aligned. Throws where cuDNN has no FP8 plan for the shape; the caller then keeps its own kernel.
    package func cudnnFP8Attention(query: UInt64, queryStride: Int, key: UInt64, value: UInt64, keyValueStride: Int, batch: Int,
                                   queries lq: Int, keys lk: Int, channels: Int, heads: Int, scales: CUDATensor) throws -> CUDATensor {
        let d = heads > 0 ? channels / heads : 0
        guard heads > 0, channels % heads == 0, runsFP8Attention(headDim: d, queries: lq), batch > 0, lk > 0 else {
            throw CUDAError.invalidArgument("cudnnFP8Attention: \(channels) channels in \(heads) heads, \(lq) queries, \(lk) keys on compute capability \(context.computeCapability)")
        }
        guard [query, key, value].allSatisfy({ $0 % 16 == 0 }), queryStride % 16 == 0, keyValueStride % 16 == 0,
              scales.dtype == .float32, scales.count == FP8AttentionScales.count * FP8AttentionScales.stride / 4 else {
            throw CUDAError.invalidArgument("cudnnFP8Attention: rows must be 16-byte aligned (strides \(queryStride), \(keyValueStride)), scales \(scales.shape)")
        }
        let attention = try cudnnAttentionRegardless()
        let y = try context.empty([batch, lq, channels], dtype: .float8e4m3)
        let amax = try fp8AttentionAmax()
        // The SMs bound a call's tiles only where cuDNN gets calls past one wave wrong.
        let tilesPerCall = Self.fp8AttentionRunsPastOneWave(cudnnVersion: attention.api.cudnnGetVersion())
            ? Int.max : context.multiprocessorCount
        for call in Self.fp8AttentionCalls(batch: batch, heads: heads, headDim: d, queries: lq, keys: lk, queryStride: queryStride,
                                           keyValueStride: keyValueStride, multiprocessors: tilesPerCall) {
            let shape = CUDNNAttention.Shape(batch: call.images, heads: call.heads, queries: lq, keys: lk, headDim: d,
                                             queryStride: queryStride, keyValueStride: keyValueStride, outputStride: channels)
            try attention.forwardFP8(shape, query: query + UInt64(call.queryOffset), key: key + UInt64(call.keyValueOffset),
                                     value: value + UInt64(call.keyValueOffset), output: y.address + UInt64(call.outputOffset),
                                     scales: scales.address, amax: amax.address, scale: 1 / Float(d).squareRoot())
        }
        return y
    }

    /// One cuDNN call of `cudnnFP8Attention`: a group of heads of `images` images from `image` on, and the byte offsets
    /// of its first Q, K/V and O elements from the tensors' starts (FP8: one byte per element).
    struct FP8AttentionCall: Equatable {
        var image: Int, images: Int, firstHead: Int, heads: Int
        var queryOffset: Int, keyValueOffset: Int, outputOffset: Int
    }

    /// Whether cuDNN `cudnnVersion` (`cudnnGetVersion`'s number) runs the FP8 attention right in calls of more than one
    /// wave of tiles, so that one call covers all images and heads: 9.19 did on an H200 (2026-12-03: the self-test's
    /// 2048- and 4096-token cases, and the SDXL UNet's graph equal to its eager forward), 9.14 did not (below); the
    /// versions between were not tried. One call took 32.6 instead of 43.0 µs at SDXL's 1024 tokens (three calls) and
    /// 158 instead of 182 µs at 4096 (five).
    static func fp8AttentionRunsPastOneWave(cudnnVersion: Int) -> Bool { cudnnVersion >= 91900 }

    /// Calls that cover `batch` images × `heads` heads with at most one wave of 128-query tiles each on
    /// `multiprocessors` SMs (`Int.max`: one call): every image in each call and the heads in groups when one wave
    /// holds a head of every image, else one image per call; as few groups as that allows, of ⌈heads / groups⌉ heads
    /// but the last.
    /// cuDNN 9.14's FP8 kernel on an H200 returned some tiles wrong, a different set on every run, in calls of more
    /// 128-query tiles (batch · heads · ⌈queries / 128⌉) than the GPU has SMs: two images of 5 heads at 2048 queries
    /// (160 tiles), and now and then one image at 4096 (160); calls of up to 128 tiles matched in every run. The calls
    /// run one after the other: queued on side streams to run together, they took 35 instead of 43 µs at SDXL's 1024
    /// tokens, but the UNet's output went wrong again (with one cuDNN handle, and with one per stream). The output
    /// is [batch, queries, heads · headDim].
    static func fp8AttentionCalls(batch: Int, heads: Int, headDim: Int, queries: Int, keys: Int, queryStride: Int,
                                  keyValueStride: Int, multiprocessors: Int) -> [FP8AttentionCall] {
        guard batch > 0, heads > 0 else { return [] }
        let tilesPerHead = max(1, (queries + fp8AttentionTileRows - 1) / fp8AttentionTileRows)
        let images = batch * tilesPerHead <= multiprocessors ? batch : 1
        let most = max(1, min(heads, multiprocessors / (images * tilesPerHead)))
        let groups = (heads + most - 1) / most
        let headsPerCall = (heads + groups - 1) / groups
        let channels = heads * headDim
        return stride(from: 0, to: batch, by: images).flatMap { image in
            stride(from: 0, to: heads, by: headsPerCall).map { first in
                FP8AttentionCall(image: image, images: min(images, batch - image), firstHead: first, heads: min(headsPerCall, heads - first),
                                 queryOffset: image * queries * queryStride + first * headDim,
                                 keyValueOffset: image * keys * keyValueStride + first * headDim,
                                 outputOffset: image * queries * channels + first * headDim)
            }
        }
    }
}

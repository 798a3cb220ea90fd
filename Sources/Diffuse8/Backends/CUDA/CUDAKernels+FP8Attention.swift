/// Level-4 FP8 attention through cuDNN's fused FP8 kernel (`CUDNNAttention.forwardFP8`), which runs Q·Kᵀ and P·V
/// on FP8 tensor cores (Hopper's wgmma), where our own level-4 kernel multiplies in FP16 and passes over the keys twice.
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

extension CUDAKernels {
    /// The longest query or key sequence `cudnnFP8Attention` runs. With cuDNN 9.14 on an H200 its FP8 kernel returned
    /// some tiles wrong — a different set on every run — for one image of 4096 queries and for two images of 2048 in
    /// one call (while one image of 2048 matched); at up to 1024, one image per call, it matched the reference in
    /// every run. Longer sequences run our level-4 kernel.
    package static let fp8AttentionLongestSequence = 1024

    /// Whether this GPU can run cuDNN's FP8 attention (compute capability 9.0 or newer) with head dim `headDim`
    /// (a multiple of 16, at most 256) on sequences of these lengths.
    package func runsFP8Attention(headDim: Int, queries: Int, keys: Int) -> Bool {
        let (major, _) = context.computeCapability
        let longest = Self.fp8AttentionLongestSequence
        return major >= 9 && headDim % 16 == 0 && headDim <= 256 && (1...longest).contains(queries) && (1...longest).contains(keys)
    }

    /// O = attention of E4M3 codes, as the E4M3 codes of O with the scale in `scales` (`FP8AttentionScales.upload`): [batch, queries, channels]. Rows as in `attention(query:queryStride:…)`, strides in elements
    /// (= bytes), 16-byte aligned. Throws where cuDNN has no FP8 plan for the shape; the caller then keeps its own kernel.
    package func cudnnFP8Attention(query: UInt64, queryStride: Int, key: UInt64, value: UInt64, keyValueStride: Int, batch: Int,
                                   queries lq: Int, keys lk: Int, channels: Int, heads: Int, scales: CUDATensor) throws -> CUDATensor {
        let d = heads > 0 ? channels / heads : 0
        guard heads > 0, channels % heads == 0, runsFP8Attention(headDim: d, queries: lq, keys: lk), batch > 0 else {
            throw CUDAError.invalidArgument("cudnnFP8Attention: \(channels) channels in \(heads) heads, \(lq) queries, \(lk) keys on compute capability \(context.computeCapability)")
        }
        guard [query, key, value].allSatisfy({ $0 % 16 == 0 }), queryStride % 16 == 0, keyValueStride % 16 == 0,
              scales.dtype == .float32, scales.count == FP8AttentionScales.count * FP8AttentionScales.stride / 4 else {
            throw CUDAError.invalidArgument("cudnnFP8Attention: rows must be 16-byte aligned (strides \(queryStride), \(keyValueStride)), scales \(scales.shape)")
        }
        let attention = try cudnnAttentionRegardless()
        let y = try context.empty([batch, lq, channels], dtype: .float8e4m3)
        let amax = try fp8AttentionAmax()
        // One image per call (see `fp8AttentionLongestSequence`).
        let shape = CUDNNAttention.Shape(batch: 1, heads: heads, queries: lq, keys: lk, headDim: d,
                                         queryStride: queryStride, keyValueStride: keyValueStride)
        for image in 0..<UInt64(batch) {
            try attention.forwardFP8(shape, query: query + image * UInt64(lq * queryStride), key: key + image * UInt64(lk * keyValueStride),
                                     value: value + image * UInt64(lk * keyValueStride), output: y.address + image * UInt64(lq * channels),
                                     scales: scales.address, amax: amax.address, scale: 1 / Float(d).squareRoot())
        }
        return y
    }
}

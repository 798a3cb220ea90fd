/// Scaled dot-product attention as two cuBLASLt GEMMs around a row softmax, for head dims the fused
/// kernels (`CUDAAttentionSource.headDims`) do not have — above all the VAE mid block's single head of
/// dim = channels (512 for the SD/SDXL VAEs).
///
/// Per (image, head) and per chunk of query rows: S = scale·Q·Kᵀ (the scale is the GEMM's α, applied in FP32
/// before S is rounded to FP16, so logits of a 512-wide dot product cannot overflow), P = softmax(S) in FP32
/// (stored as FP16, multiplied by a power of two c ≈ Lk so probabilities near 1/Lk stay out of FP16's
/// subnormals), O = (1/c)·P·V (α = 1/c, again in FP32 before rounding). Same results as
/// `F.scaled_dot_product_attention` up to FP16 rounding of S, P and O.
///
/// Memory: one S buffer of at most `gemmAttentionScoreBytes` (query rows are chunked to fit); per
/// (image, head), operands that are not 256-byte aligned (cuBLASLt's default alignment assumption) or whose
/// rows are not 16-byte multiples are first copied to dense buffers (rows padded to 16 bytes, as are S's rows).
/// Limitations: no masks, no causal option; slower than the fused kernels where those exist (S makes a round
/// trip through memory).
extension CUDAKernels {
    static let gemmAttentionSource = CUDAKernelSources.prelude + #"""

// In place, one block per row of s [rows, D] (rows `pitch` apart): s = softmax(s) * c, in FP32 (one pass for the
// running max and sum, one to write). Rows of any length (16384 keys for a 1024² VAE decode). fp8_scale > 0: the
// normalized probabilities are FP8-quantized with that scale first (level-4 FP8 attention, as the CPU simulation does).
extern "C" __global__ void softmax_rows_scaled(half_t* s, int D, i64 pitch, float c, float fp8_scale) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ float scratch[32];
    half_t* p = s + (i64)blockIdx.x * pitch;
    float m = -D8_INFINITY, sum = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        const float v = h2f(p[i]);
        if (v > m) { sum = sum * expf(m - v) + 1.f; m = v; } else { sum += expf(v - m); }
    }
    const float M = block_max(m, scratch);
    sum = m == -D8_INFINITY ? 0.f : sum * expf(m - M);
    const float total = block_sum(sum, scratch);
    if (fp8_scale > 0.f) {
        for (int i = threadIdx.x; i < D; i += blockDim.x) p[i] = f2h(fake_quantize(expf(h2f(p[i]) - M) / total, fp8_scale, 1) * c);
        return;
    }
    const float scale = c / total;
    for (int i = threadIdx.x; i < D; i += blockDim.x) p[i] = f2h(expf(h2f(p[i]) - M) * scale);
}

// dst[r * dst_stride + j] = src[r * src_stride + j] for r < rows, j < cols (strided head slices <-> contiguous).
extern "C" __global__ void copy_rows(const half_t* __restrict__ src, i64 src_stride, half_t* __restrict__ dst,
        i64 dst_stride, i64 rows, int cols) {
    D8_AFTER_PREVIOUS_KERNEL();
    const i64 n = rows * cols;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const i64 r = i / cols; const int j = (int)(i - r * cols);
        dst[r * dst_stride + j] = src[r * src_stride + j];
    }
}
"""#

    /// The most bytes the FP16 logits buffer S may take: 512 MiB holds all 16384 × 16384 logits of a
    /// 1024 × 1024 decode's mid-block attention at once; longer sequences are chunked by query rows.
    static let gemmAttentionScoreBytes = 512 << 20

    private func gemmAttentionKernel(_ name: String) throws -> CUDAFunction {
        try compiler.function(name, module: "diffuse8_gemm_attention", source: Self.gemmAttentionSource)
    }

    /// Multi-head scaled dot-product attention for any head dim (`F.scaled_dot_product_attention` on heads split
    /// from the channel dimension): q [B, Lq, H·D], k and v [B, Lk, H·D] → [B, Lq, H·D]; `scale` defaults to
    /// 1/√D. Through cuBLASLt GEMMs and a row softmax (see the extension's comment); prefer `attention` where
    /// the head dim has a fused kernel (`scaledDotProductAttention` picks).
    public func gemmAttention(query q: CUDATensor, key k: CUDATensor, value v: CUDATensor, heads: Int,
                              scale: Float? = nil) throws -> CUDATensor {
        try requireHalf(q, k, v, op: "gemmAttention")
        guard q.shape.count == 3, k.shape.count == 3, heads > 0, q.shape[2] % heads == 0,
              k.shape == [q.shape[0], k.shape[1], q.shape[2]], v.shape == k.shape else {
            throw CUDAError.invalidArgument("gemmAttention: q \(q.shape), k \(k.shape), v \(v.shape), \(heads) heads "
                                            + "(expected q [B, Lq, H·D], k and v [B, Lk, H·D])")
        }
        let channels = q.shape[2]
        return try withExtendedLifetime((q, k, v)) {
            try gemmAttention(query: q.address, queryStride: channels, key: k.address, value: v.address,
                              keyValueStride: channels, batch: q.shape[0], queries: q.shape[1], keys: k.shape[1],
                              channels: channels, heads: heads, scale: scale)
        }
    }

    /// `attention` (fused kernel) when the head dim has one, else `gemmAttention`. Same arguments and result.
    public func scaledDotProductAttention(query q: CUDATensor, key k: CUDATensor, value v: CUDATensor, heads: Int,
                                          scale: Float? = nil) throws -> CUDATensor {
        if let channels = q.shape.last, heads > 0, channels % heads == 0,
           CUDAAttentionSource.headDims.contains(channels / heads) {
            return try attention(query: q, key: k, value: v, heads: heads, scale: scale)
        }
        return try gemmAttention(query: q, key: k, value: v, heads: heads, scale: scale)
    }

    /// `gemmAttention` on rows that need not be contiguous, like the strided `attention`: query row `i` of image
    /// `b` starts at `query + (b·queries + i)·queryStride` halves, key/value rows likewise with `keyValueStride`
    /// (a fused QKV [B, L, 3C] is read in place). Output: [batch, queries, channels]. `maximumScoreBytes` bounds the
    /// S buffer (smaller values force query chunking, for tests).
    /// `fp8ProbabilityAmax`: level-4 FP8 attention — the softmax probabilities are FP8-quantized with this amax (1 when
    /// not calibrated) before P·V.
    package func gemmAttention(query: UInt64, queryStride: Int, key: UInt64, value: UInt64, keyValueStride: Int,
                       batch: Int, queries lq: Int, keys lk: Int, channels: Int, heads: Int, scale: Float? = nil,
                       fp8ProbabilityAmax: Float? = nil,
                       maximumScoreBytes: Int = CUDAKernels.gemmAttentionScoreBytes) throws -> CUDATensor {
        guard heads > 0, channels % heads == 0, batch > 0, lq > 0, lk > 0,
              queryStride >= channels, keyValueStride >= channels else {
            throw CUDAError.invalidArgument("gemmAttention: batch \(batch), \(lq) queries, \(lk) keys, \(channels) channels, "
                                            + "\(heads) heads, strides \(queryStride)/\(keyValueStride)")
        }
        let d = channels / heads
        let s = scale ?? 1 / Float(d).squareRoot()
        let y = try output([batch, lq, channels])
        // Every leading dimension a multiple of 8 halves (16 bytes): S rows and staged operands are padded.
        let scoresPitch = (lk + 7) / 8 * 8, stagedPitch = (d + 7) / 8 * 8
        // Query rows per chunk: a multiple of 128 (chunk offsets stay 256-byte aligned) within the S budget.
        let chunkRows = min(lq, max(128, maximumScoreBytes / (2 * scoresPitch) / 128 * 128))
        let scores = try output([chunkRows, scoresPitch])
        // P is stored times c (a power of two ≤ 16384, about Lk) and the P·V GEMM multiplies by 1/c.
        var c: Float = 1
        while c * 2 <= Float(min(lk, 16384)) { c *= 2 }
        let softmax = try gemmAttentionKernel("softmax_rows_scaled"), copyRows = try gemmAttentionKernel("copy_rows")

        func copy(_ source: UInt64, _ sourceStride: Int, to destination: UInt64, _ destinationStride: Int, rows: Int) throws {
            try compiler.launch(copyRows, grid: elementwiseGrid(rows * d), block: (256, 1, 1), [
                .pointer(source), .int64(Int64(sourceStride)), .pointer(destination), .int64(Int64(destinationStride)),
                .int64(Int64(rows)), .int(d)])
        }
        func usableInPlace(_ address: UInt64, _ stride: Int) -> Bool { address % 256 == 0 && stride % 8 == 0 }
        // Dense [rows, stagedPitch] stand-ins for operands that are not usable in place (allocated once, reused).
        var staging: [Int: CUDATensor] = [:]
        func operand(_ address: UInt64, stride: Int, rows: Int, slot: Int) throws -> (address: UInt64, stride: Int) {
            if usableInPlace(address, stride) { return (address, stride) }
            if staging[slot] == nil { staging[slot] = try output([rows, stagedPitch]) }
            try copy(address, stride, to: staging[slot]!.address, stagedPitch, rows: rows)
            return (staging[slot]!.address, stagedPitch)
        }

        for b in 0..<batch {
            for h in 0..<heads {
                let column = UInt64(h * d * 2)
                let q = try operand(query + UInt64(b * lq * queryStride * 2) + column, stride: queryStride, rows: lq, slot: 0)
                let k = try operand(key + UInt64(b * lk * keyValueStride * 2) + column, stride: keyValueStride, rows: lk, slot: 1)
                let v = try operand(value + UInt64(b * lk * keyValueStride * 2) + column, stride: keyValueStride, rows: lk, slot: 2)
                let destination = y.address + UInt64((b * lq * channels + h * d) * 2)
                let direct = usableInPlace(destination, channels)
                if !direct && staging[3] == nil { staging[3] = try output([lq, stagedPitch]) }
                let o = direct ? (address: destination, stride: channels) : (address: staging[3]!.address, stride: stagedPitch)
                var start = 0
                while start < lq {
                    let rows = min(chunkRows, lq - start)
                    // Column-major view: Sᵀ[Lk, rows] = K[Lk, d] · Q[rows, d]ᵀ, i.e. row-major S = s·Q·Kᵀ.
                    try matmul.run(.init(m: lk, n: rows, k: d, transA: true, transB: false, lda: k.stride, ldb: q.stride,
                                         ldd: scoresPitch, epilogue: .none, alpha: s),
                                   a: k.address, b: q.address + UInt64(start * q.stride * 2), d: scores.address)
                    try compiler.launch(softmax, grid: (rows, 1, 1), block: (lk >= 4096 ? 512 : 128, 1, 1), [
                        .tensor(scores), .int(lk), .int64(Int64(scoresPitch)), .float(c), .float(fp8ProbabilityAmax.map { QuantizedFormat.fp8.scale(forAmax: $0) } ?? 0)])
                    // Oᵀ[d, rows] = Vᵀ[d, Lk] · Pᵀ[Lk, rows], i.e. row-major O = (1/c)·(c·P)·V.
                    try matmul.run(.init(m: d, n: rows, k: lk, transA: false, transB: false, lda: v.stride, ldb: scoresPitch,
                                         ldd: o.stride, epilogue: .none, alpha: 1 / c),
                                   a: v.address, b: scores.address, d: o.address + UInt64(start * o.stride * 2))
                    start += rows
                }
                if !direct { try copy(o.address, stagedPitch, to: destination, channels, rows: lq) }
            }
        }
        return y
    }
}

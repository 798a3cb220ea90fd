/// Level-4 FP8 attention of our own for Hopper: both products on FP8 tensor cores through `wgmma`, the probabilities
/// rounded inside the flash loop as cuDNN's FP8 attention rounds them (exp(s − running max) · scale_P to E4M3,
/// normalised by the unrounded sum at the end), in one launch for every head and image. It reads and writes what
/// `cudnnFP8Attention` reads and writes (E4M3 codes of Q, K, V in, of O out, the same `FP8AttentionScales`), so it
/// can stand in for it: without cuDNN's limit of one wave of tiles per call, which splits SDXL's 1024-token
/// self-attention into three calls.
///
/// Each block of 256 threads takes 128 queries of one head: two warpgroups of 64 query rows each, over the keys in
/// blocks of 64. Per key block, S = Q·Kᵀ (m64n64k32 twice, FP32 sums in registers), the online softmax on those
/// registers, the probabilities' codes written to shared memory, then O += P·V (m64n64k32 twice). FP8 `wgmma` reads
/// both operands K-major, so V is transposed while it is stored to shared memory. Every tile is 64 rows of 128 bytes in
/// the 128-byte swizzle (the layout our wgmma GEMM reads through TMA), of which a row's first 64 bytes hold data.
/// Head dim 64 only (SDXL's); other head dims keep cuDNN or our two-pass kernel.
extension CUDAKernels {
    /// The head dim the kernel is written for.
    static let wgmmaFP8AttentionHeadDim = 64

    /// Dynamic shared memory of one block: Q (two warpgroups), K and Vᵀ (two stages each), P (two warpgroups), 8 KB
    /// each, plus the alignment of the 1024-byte swizzle atoms.
    static let wgmmaFP8AttentionSharedBytes = 8 * 8192 + 1024

    /// Whether our wgmma FP8 attention runs on this GPU for head dim `headDim`: `wgmma` needs sm_90a (compute
    /// capability 9.0 exactly).
    package func runsWGMMAFP8Attention(headDim: Int) -> Bool {
        context.computeCapability == (9, 0) && headDim == Self.wgmmaFP8AttentionHeadDim
            && Self.wgmmaFP8AttentionSharedBytes <= context.maxSharedMemoryPerBlock
    }

    /// `cudnnFP8Attention`'s result by our wgmma kernel: O = attention of E4M3 codes, as the E4M3 codes of O with the
    /// scale in `scales` ([batch, queries, channels]). Rows as there: strides in elements (= bytes), 16-byte aligned.
    package func wgmmaFP8Attention(query: UInt64, queryStride: Int, key: UInt64, value: UInt64, keyValueStride: Int, batch: Int,
                                   queries lq: Int, keys lk: Int, channels: Int, heads: Int, scales: CUDATensor) throws -> CUDATensor {
        let d = heads > 0 ? channels / heads : 0
        guard heads > 0, channels % heads == 0, runsWGMMAFP8Attention(headDim: d), batch > 0, lq > 0, lk > 0,
              heads <= 65_535, batch <= 65_535 else {
            throw CUDAError.invalidArgument("wgmmaFP8Attention: \(channels) channels in \(heads) heads, batch \(batch), \(lq) queries, \(lk) keys on compute capability \(context.computeCapability)")
        }
        guard [query, key, value].allSatisfy({ $0 % 16 == 0 }), queryStride % 16 == 0, keyValueStride % 16 == 0,
              scales.dtype == .float32, scales.count == FP8AttentionScales.count * FP8AttentionScales.stride / 4 else {
            throw CUDAError.invalidArgument("wgmmaFP8Attention: rows must be 16-byte aligned (strides \(queryStride), \(keyValueStride)), scales \(scales.shape)")
        }
        let function = try compiler.function("fp8_attention_wgmma", module: "diffuse8_fp8_attention_wgmma", architecture: "sm_90a",
                                             source: Self.wgmmaFP8AttentionSource)
        try compiler.allowSharedMemory(function, bytes: Self.wgmmaFP8AttentionSharedBytes)
        let y = try context.empty([batch, lq, channels], dtype: .float8e4m3)
        try compiler.launch(function, grid: ((lq + 127) / 128, heads, batch), block: (256, 1, 1),
                            sharedBytes: Self.wgmmaFP8AttentionSharedBytes, [
            .pointer(query), .pointer(key), .pointer(value), .tensor(y), .tensor(scales), .int(lq), .int(lk), .int(queryStride),
            .int(keyValueStride), .int(channels)])
        return y
    }

    static var wgmmaFP8AttentionSource: String {
        CUDAKernelSources.prelude + "\ntypedef unsigned long long u64;\ntypedef float ACC;\n" + sharedMemoryOperands
            + wgmmaCall(columns: 64, format: .fp8) + wgmmaFP8AttentionBody
    }

    private static let wgmmaFP8AttentionBody = #"""
#define HD 64          // head dim: bytes of a Q, K or V row
#define BK 64          // keys per block
#define TILE 8192      // one tile: 64 rows × 128 bytes

/// Offset of 16-byte chunk c of row r in a tile of the 128-byte swizzle (the chunk index XOR the row within its atom).
__device__ __forceinline__ u32 swizzled(int r, int c) { return (u32)(r * 128 + ((c ^ (r & 7)) << 4)); }
/// 16 bytes global → shared, asynchronously; zeros where `valid` is false (nothing is read then).
__device__ __forceinline__ void copy16(u32 dst, const unsigned char* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
/// acc[64 × 64] += A · Bᵀ over 64 bytes of K, A and B the 64-row tiles at a and b (K-major), on the tensor cores;
/// returns when the products are done.
__device__ __forceinline__ void multiply_k64(float* acc, u32 a, u32 b) {
    #pragma unroll
    for (int i = 0; i < 32; i++) asm volatile("" : "+f"(acc[i]) :: "memory");
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
    wgmma_tile(acc, smem_desc(a), smem_desc(b));
    wgmma_tile(acc, smem_desc(a + 32), smem_desc(b + 32));
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    #pragma unroll
    for (int i = 0; i < 32; i++) asm volatile("" : "+f"(acc[i]) :: "memory");
}
/// Row `key` of V (16 bytes from column chunk c), or zeros past the keys.
__device__ __forceinline__ vec16 value_chunk(const unsigned char* v, int key, int Lk, int stride, int c) {
    vec16 z; z.x = z.y = z.z = z.w = 0u;
    return key < Lk ? *(const vec16*)(v + (i64)key * stride + c * 16) : z;
}
/// Stores the 16 codes of V row r (within the key block), channels 16c…16c+15, as column r of Vᵀ's tile.
__device__ __forceinline__ void store_transposed(u32 tile, vec16 chunk, int r, int c) {
    const u32 words[4] = {chunk.x, chunk.y, chunk.z, chunk.w};
    #pragma unroll
    for (int e = 0; e < 16; e++) {
        const u32 at = tile + swizzled(c * 16 + e, r >> 4) + (r & 15);
        asm volatile("st.shared.u8 [%0], %1;\n" :: "r"(at), "r"((words[e >> 2] >> ((e & 3) * 8)) & 0xffu) : "memory");
    }
}

// Y[b, i, h·64 + t] = E4M3 code of scale_O · Σ_j p̃_j V[b, j, h·64 + t] · descale_P · descale_V / Σ_j p_j, where
// p_j = exp(s_j − m) with s_j = Q_i·K_j · descale_Q · descale_K / 8 and m the running max of s over the key blocks
// so far, and p̃_j = code of p_j · scale_P. Q, K, V: E4M3 codes, rows of `q_stride` / `kv_stride` bytes with the heads
// side by side; scales: descale Q, K, V, P, scale P, scale O at 16-byte slots (`FP8AttentionScales`).
extern "C" __global__ void __launch_bounds__(256, 2) fp8_attention_wgmma(
        const unsigned char* __restrict__ q, const unsigned char* __restrict__ k, const unsigned char* __restrict__ v,
        unsigned char* __restrict__ y, const float* __restrict__ scales, int Lq, int Lk, int q_stride, int kv_stride,
        int y_stride) {
    D8_AFTER_PREVIOUS_KERNEL();
    extern __shared__ unsigned char smem_raw[];
    const u32 base = (smem_addr(smem_raw) + 1023) & ~1023u;
    const u32 sQ = base, sK = base + 2 * TILE, sV = base + 4 * TILE, sP = base + 6 * TILE;
    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, quad = lane & 3;
    const int h = blockIdx.y, b = blockIdx.z, q0 = blockIdx.x * 128;
    const unsigned char* qh = q + (i64)b * Lq * q_stride + h * HD;
    const unsigned char* kh = k + (i64)b * Lk * kv_stride + h * HD;
    const unsigned char* vh = v + (i64)b * Lk * kv_stride + h * HD;
    const float log2e = 1.4426950408889634f;
    const float score_scale = scales[0] * scales[4] * 0.125f * log2e;   // base 2: p = 2^(s·c − m·c), c = log2 e · descales / 8
    const float log2_scale_p = log2f(scales[16]);
    const int blocks = (Lk + BK - 1) / BK;
    const int lr = tid >> 2, lc = tid & 3;   // this thread's row and 16-byte chunk in each K and V block load

    // Q: 128 rows × 4 chunks, the first 64 rows to warpgroup 0's tile, the next to warpgroup 1's.
    for (int i = tid; i < 512; i += 256) {
        const int r = i >> 2, c = i & 3, row = q0 + r;
        copy16(sQ + (r >> 6) * TILE + swizzled(r & 63, c), qh + (i64)min(row, Lq - 1) * q_stride + c * 16, row < Lq);
    }
    copy16(sK + swizzled(lr, lc), kh + (i64)min(lr, Lk - 1) * kv_stride + lc * 16, lr < Lk);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    store_transposed(sV, value_chunk(vh, lr, Lk, kv_stride, lc), lr, lc);
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");   // the tiles, written by threads, read by wgmma
    __syncthreads();

    float o[32], s[32];
    #pragma unroll
    for (int i = 0; i < 32; i++) o[i] = 0.f;
    float m[2] = {-D8_INFINITY, -D8_INFINITY}, l[2] = {0.f, 0.f};   // per row: running max of the raw scores, this thread's Σ p̃
    const u32 qTile = sQ + wg * TILE, pTile = sP + wg * TILE;
    const int localRow = warp * 16 + (lane >> 2);   // rows localRow and localRow + 8 of this warpgroup's 64

    for (int j = 0; j < blocks; j++) {
        const int stage = j & 1;
        const bool more = j + 1 < blocks;
        vec16 nextV; nextV.x = nextV.y = nextV.z = nextV.w = 0u;
        if (more) {   // block j + 1 into the other stage while this one is multiplied
            const int key = (j + 1) * BK + lr;
            copy16(sK + (stage ^ 1) * TILE + swizzled(lr, lc), kh + (i64)min(key, Lk - 1) * kv_stride + lc * 16, key < Lk);
            asm volatile("cp.async.commit_group;\n" ::: "memory");
            nextV = value_chunk(vh, key, Lk, kv_stride, lc);
        }

        // S = Q · Kᵀ for this warpgroup's 64 rows and the block's 64 keys
        #pragma unroll
        for (int i = 0; i < 32; i++) s[i] = 0.f;
        multiply_k64(s, qTile, sK + stage * TILE);

        // Online softmax, on the raw scores: s[i·4 + hh·2 + e] is row localRow + 8·hh, key i·8 + 2·quad + e of the
        // block; a row's 64 keys are spread over the 4 threads of a quad. Keys past the end only in the last block.
        if ((j + 1) * BK > Lk) {
            #pragma unroll
            for (int i = 0; i < 32; i++) {
                if (j * BK + (i >> 2) * 8 + 2 * quad + (i & 1) >= Lk) s[i] = -D8_INFINITY;
            }
        }
        float alpha[2];
        #pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            float blockMax = -D8_INFINITY;
            #pragma unroll
            for (int i = 0; i < 8; i++) blockMax = fmaxf(blockMax, fmaxf(s[i * 4 + hh * 2], s[i * 4 + hh * 2 + 1]));
            blockMax = fmaxf(blockMax, __shfl_xor_sync(0xffffffffu, blockMax, 1));
            blockMax = fmaxf(blockMax, __shfl_xor_sync(0xffffffffu, blockMax, 2));
            const float newMax = fmaxf(m[hh], blockMax);   // finite: every block has a key
            alpha[hh] = fast_exp2((m[hh] - newMax) * score_scale);   // 0 on the first block (ex2 of −inf)
            m[hh] = newMax;
        }
        // The running max changes on few blocks after the first ones: rescale only where some row's did.
        if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
            #pragma unroll
            for (int i = 0; i < 32; i++) o[i] *= alpha[(i >> 1) & 1];
        }
        #pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            // p̃ = scale_P · exp(s − m), as 2^(s·c − m·c + log2 scale_P) in one FMA and one ex2
            const float shift = fmaf(-m[hh], score_scale, log2_scale_p);
            const int row = localRow + hh * 8;
            float sum = 0.f;
            #pragma unroll
            for (int i = 0; i < 8; i++) {
                const float p0 = fast_exp2(fmaf(s[i * 4 + hh * 2], score_scale, shift));
                const float p1 = fast_exp2(fmaf(s[i * 4 + hh * 2 + 1], score_scale, shift));
                sum += p0 + p1;
                unsigned short pair;   // the first operand goes to the high byte: key 2·quad + 1
                asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(p1), "f"(p0));
                const u32 at = pTile + swizzled(row, i >> 1) + (i & 1) * 8 + 2 * quad;
                asm volatile("st.shared.u16 [%0], %1;\n" :: "r"(at), "h"(pair) : "memory");
            }
            l[hh] = fmaf(l[hh], alpha[hh], sum);
        }
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        asm volatile("bar.sync %0, 128;\n" :: "r"(1 + wg) : "memory");

        // O += P̃ · V: P̃ [64 rows × 64 keys] and Vᵀ [64 channels × 64 keys], both K-major
        multiply_k64(o, pTile, sV + stage * TILE);

        if (more) store_transposed(sV + (stage ^ 1) * TILE, nextV, lr, lc);
        asm volatile("cp.async.wait_all;\n" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();   // the next stage is complete, and this one (and P) free to be written again
    }

    // O / Σp = O · scale_P / Σp̃, descaled and scaled to the output's codes
    const float factor = scales[12] * scales[8] * scales[20] * scales[16];
    #pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        float sum = l[hh];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const int row = q0 + wg * 64 + localRow + hh * 8;
        if (row >= Lq) continue;
        const float f = factor / sum;
        unsigned char* out = y + ((i64)b * Lq + row) * y_stride + h * HD + 2 * quad;
        #pragma unroll
        for (int i = 0; i < 8; i++) {
            unsigned short pair;
            asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(o[i * 4 + hh * 2 + 1] * f), "f"(o[i * 4 + hh * 2] * f));
            *(unsigned short*)(out + i * 8) = pair;
        }
    }
}
"""#
}

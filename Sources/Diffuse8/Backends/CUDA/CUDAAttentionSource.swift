/// The fused attention kernel (FlashAttention-2 style), as CUDA C for NVRTC.
///
/// One block of 4 warps takes 64 queries of one (batch, head); each warp owns 16 query rows and walks
/// the keys in tiles of 64: S = Q·Kᵀ with `mma.sync m16n8k16` (FP16 in, FP32 accumulate), an online
/// softmax in FP32 (`ex2.approx` with the scale folded into log2 e), P rounded to FP16 and O += P·V with the
/// same instruction (V fragments through `ldmatrix.trans`). The score matrix never leaves registers.
/// Head dims: any multiple of 8 up to 256 instantiated below (Q·Kᵀ pads the head dim to a multiple of 16).
///
/// Limitations: no causal mask or attention mask; K/V tiles are loaded synchronously (no cp.async
/// pipeline) and Hopper's wgmma is not used, so it stays below FlashAttention-3 speed.
package enum CUDAAttentionSource {
    /// Head dims with a compiled kernel (`attention_d<D>`).
    package static let headDims = [8, 16, 24, 32, 40, 48, 64, 80, 96, 128, 160]

    /// Head dims that also have the pipelined kernel (`attention_pipelined_d<D>`): 128 queries per block
    /// (32 per warp, so each K/V fragment feeds two MMAs) and cp.async double-buffered K/V tiles.
    package static let pipelinedHeadDims = [32, 40, 64, 80]

    /// Head dims of the one-pass FP8-probability kernel for at most 128 keys (`attention_fp8p_k128_d<D>`; its K and V
    /// tiles of 128 rows fit the 48 KB of static shared memory up to D = 80).
    package static let shortKeyHeadDims = [32, 40, 48, 64, 80]

    /// The most keys `attention_fp8p_k128_d<D>` takes.
    package static let shortKeys = 128

    /// Level-4 FP8 attention: `attention_fp8p_d<D>` rounds each softmax probability to FP8 E4M3 with the layer's
    /// probability amax a (scale a/448, saturating at a; a = 1 when not calibrated) before P·V, as the CPU simulation
    /// (`FP8AttentionSimulation`) and NVIDIA's FP8 attention recipe define it. The probabilities must be normalised
    /// before rounding, so it makes two passes over the keys: the first finds each row's maximum and sum, the second
    /// forms the exact probabilities (≈1.5× the 16-bit kernel's work). Given `pmax`, it stops after the first pass and
    /// raises `*pmax` to the largest probability of its rows, 1/Σ exp(s − max) (what calibration records).
    /// `attention_pipelined_fp8p_d<D>` makes the same two passes in the pipelined kernel. Where all keys fit in one tile
    /// of 128 (cross-attention's 77 text tokens), `attention_fp8p_k128_d<D>` makes one pass: the tile's maximum and sum
    /// are then the row's (the two-pass kernel's probabilities, but for the sum's rounding: that one adds two 64-key
    /// tiles with a rescale).
    static var source: String {
        CUDAKernelSources.prelude + pack + body + pipelinedBody + shortKeysBody + [("", false), ("fp8p_", true)].map { prefix, fp8 in
            headDims.map { d in
                """
                extern "C" __global__ void __launch_bounds__(128) attention_\(prefix)d\(d)(const half_t* q, const half_t* k,
                        const half_t* v, half_t* o, int heads, int Lq, int Lk, float scale_log2, int q_stride, int kv_stride\(fp8 ? ",\n                        float p_encode, float p_decode, float* pmax" : ""),
                        unsigned char* codes, const float* smoothing, float code_scale, int format) {
                    D8_AFTER_PREVIOUS_KERNEL();
                    attention_tile<\(d), \(fp8)>(q, k, v, o, heads, Lq, Lk, scale_log2, q_stride, kv_stride\(fp8 ? ", p_encode, p_decode, pmax" : ", 448.f, FP8_PROBABILITY_SCALE, nullptr"),
                                                   codes, smoothing, code_scale, format);
                }

                """
            }.joined()
        }.joined() + shortKeyHeadDims.map { d in
            """
            extern "C" __global__ void __launch_bounds__(128) attention_fp8p_k128_d\(d)(const half_t* q, const half_t* k,
                    const half_t* v, half_t* o, int heads, int Lq, int Lk, float scale_log2, int q_stride, int kv_stride,
                    float p_encode, float p_decode, float* pmax, unsigned char* codes, const float* smoothing, float code_scale,
                    int format) {
                D8_AFTER_PREVIOUS_KERNEL();
                attention_tile<\(d), true, 128>(q, k, v, o, heads, Lq, Lk, scale_log2, q_stride, kv_stride, p_encode, p_decode, nullptr,
                                                codes, smoothing, code_scale, format);
            }

            """
        }.joined() + [("", false), ("fp8p_", true)].map { prefix, fp8 in
            pipelinedHeadDims.map { d in
                """
                extern "C" __global__ void __launch_bounds__(128) attention_pipelined_\(prefix)d\(d)(const half_t* q, const half_t* k,
                        const half_t* v, half_t* o, int heads, int Lq, int Lk, float scale_log2, int q_stride, int kv_stride\(fp8 ? ",\n                        float p_encode, float p_decode" : ""),
                        unsigned char* codes, const float* smoothing, float code_scale, int format) {
                    D8_AFTER_PREVIOUS_KERNEL();
                    attention_tile_pipelined<\(d), 2, \(fp8)>(q, k, v, o, heads, Lq, Lk, scale_log2, q_stride, kv_stride\(fp8 ? ", p_encode, p_decode" : ", 448.f, FP8_PROBABILITY_SCALE"),
                                                             codes, smoothing, code_scale, format);
                }

                """
            }.joined()
        }.joined() + [("", false), ("fp8p_", true)].map { prefix, fp8 in
            shortKeyHeadDims.flatMap { d in shortKeyTiles.map { keys in (d, keys) } }.map { d, keys in
                """
                extern "C" __global__ void __launch_bounds__(128) attention_short\(keys)_\(prefix)d\(d)(const half_t* q, const half_t* k,
                        const half_t* v, half_t* o, int heads, int Lq, int Lk, float scale_log2, int q_stride, int kv_stride,
                        float p_encode, float p_decode, unsigned char* codes, const float* smoothing, float code_scale, int format) {
                    D8_AFTER_PREVIOUS_KERNEL();
                    attention_short_keys<\(d), \(fp8), \(keys)>(q, k, v, o, heads, Lq, Lk, scale_log2, q_stride, kv_stride, p_encode, p_decode,
                                                          codes, smoothing, code_scale, format);
                }

                """
            }.joined()
        }.joined()
    }

    /// Key counts the short-key kernel holds in shared memory (`attention_short<N>_d<D>`, head dims `shortKeyHeadDims`):
    /// 80 for the text encoder's 77 tokens, 128 for up to 128.
    package static let shortKeyTiles = [80, 128]

    /// Packs two probabilities for P·V. FP8P: as their FP8 codes with amax a (scale a/448), i.e. (448/a)·p rounded
    /// to E4M3 (`p_encode` = 448/a) — exact in FP16 — and the output is multiplied by a/448 (`p_decode`) once at the
    /// end; a = 1 gives 448 and `FP8_PROBABILITY_SCALE`.
    /// Also the shared-memory strides every attention kernel lays its K and V tiles out with.
    static let pack = #"""

/// Shared-memory row strides (halves) of a head dim's K and V tiles, the same in every attention kernel: DP pads D for
/// the k = 16 steps of Q·Kᵀ; KS and VS are chosen bank-conflict free.
template <int D> struct AttentionStrides {
    static constexpr int DP = (D + 15) / 16 * 16, KS = DP + 8, VS = (D % 16 == 8) ? D + 16 : D + 8;
};

#define FP8_PROBABILITY_SCALE (1.f / 448.f)
template <bool FP8P>
__device__ __forceinline__ u32 pack_p(float a, float b, float p_encode) {
    if (!FP8P) return pack_half2(a, b);
#if __CUDA_ARCH__ >= 890 && !defined(D8_BF16)
    unsigned short codes;
    u32 pair;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(codes) : "f"(b * p_encode), "f"(a * p_encode));
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(pair) : "h"(codes));
    return pair;
#else
    return pack_half2(e4m3_round(a * p_encode), e4m3_round(b * p_encode));
#endif
}

/// Stores one query row of a warp's output tile: per 8 columns the pair acc[j][2r], acc[j][2r + 1] times `inv`, at
/// columns col0 + 8j (+1) of the row starting at `row_offset`. With `codes`, as the reading 8-bit layer's input codes
/// instead of 16-bit values: code(y · s[c] / scale) from FP32 (s: its SmoothQuant factors, may be null; the
/// multiplier s[c] · (1/scale) as the code-writing LayerNorm folds it), as its quantize pass would make them from the
/// 16-bit output.
template <int D>
__device__ __forceinline__ void store_attention_row(const float (&acc)[D / 8][4], int r, float inv, half_t* __restrict__ o,
        unsigned char* __restrict__ codes, i64 row_offset, int col0, const float* __restrict__ smoothing, float code_scale,
        int format) {
    if (codes) {
        const float rs = __frcp_rn(code_scale);
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
            const int c = col0 + j * 8;
            const float m0 = smoothing ? smoothing[c] * rs : rs, m1 = smoothing ? smoothing[c + 1] * rs : rs;
            *(unsigned short*)(codes + row_offset + c) =
                (unsigned short)codes_of_quotients2(acc[j][2 * r] * inv * m0, acc[j][2 * r + 1] * inv * m1, 0u, format);
        }
        return;
    }
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
        *(u32*)(o + row_offset + col0 + j * 8) = pack_half2(acc[j][2 * r] * inv, acc[j][2 * r + 1] * inv);
}
"""#

    /// The pipelined variant: MT m-tiles of 16 queries per warp (BM = 64·MT per block), K/V tiles loaded with
    /// cp.async into two shared buffers so the next tile streams in while this one is multiplied. FP8P: the two
    /// passes of the FP8-probability kernel (the first streams only K).
    static let pipelinedBody = #"""

__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait_one() { asm volatile("cp.async.wait_group 1;"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;"); }

template <int D, int MT, bool FP8P>
__device__ __forceinline__ void attention_tile_pipelined(const half_t* __restrict__ q, const half_t* __restrict__ k,
        const half_t* __restrict__ v, half_t* __restrict__ o, int heads, int Lq, int Lk, float scale_log2, int q_stride, int kv_stride,
        float p_encode, float p_decode, unsigned char* __restrict__ codes, const float* __restrict__ smoothing, float code_scale,
        int format) {
    constexpr int BM = 64 * MT, BN = 64;
    constexpr int DP = AttentionStrides<D>::DP, KS = AttentionStrides<D>::KS, VS = AttentionStrides<D>::VS;
    __shared__ D8_ALIGN16 half_t Ks[2][BN * KS];
    __shared__ D8_ALIGN16 half_t Vs[2][BN * VS];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int b = blockIdx.y / heads, h = blockIdx.y % heads;
    const int stride = heads * D;
    const int q0 = blockIdx.x * BM + warp * 16 * MT;
    const half_t* qb = q + (i64)b * Lq * q_stride + h * D;
    const half_t* kb = k + (i64)b * Lk * kv_stride + h * D;
    const half_t* vb = v + (i64)b * Lk * kv_stride + h * D;

    u32 qf[MT][DP / 16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int s = 0; s < DP / 16; ++s)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int row = q0 + mt * 16 + g + ((r & 1) ? 8 : 0);
                const int col = s * 16 + 2 * t + ((r & 2) ? 8 : 0);
                qf[mt][s][r] = (row < Lq && col < D) ? *(const u32*)(qb + (i64)row * q_stride + col) : 0u;
            }

    float acc[MT][D / 8][4];
    float row_max[MT][2], row_sum[MT][2], row_inv[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int j = 0; j < D / 8; ++j) { acc[mt][j][0] = acc[mt][j][1] = acc[mt][j][2] = acc[mt][j][3] = 0.f; }
        row_max[mt][0] = row_max[mt][1] = -D8_INFINITY;
        row_sum[mt][0] = row_sum[mt][1] = 0.f;
        row_inv[mt][0] = row_inv[mt][1] = 1.f;
    }

    // Queues the K tile [BN, DP] and (with `values`) the V tile [BN, D] starting at key k0 into buffer `buf`
    // (zero-filled past the ends).
    auto load_tile = [&](int k0, int buf, bool values) {
        for (int i = tid; i < BN * (DP / 8); i += 128) {
            const int j = i / (DP / 8), c = (i % (DP / 8)) * 8;
            const bool inside = k0 + j < Lk && c < D;
            cp_async16(shared_address(&Ks[buf][j * KS + c]), inside ? kb + (i64)(k0 + j) * kv_stride + c : kb, inside ? 16 : 0);
        }
        for (int i = tid; values && i < BN * (D / 8); i += 128) {
            const int j = i / (D / 8), c = (i % (D / 8)) * 8;
            const bool inside = k0 + j < Lk;
            cp_async16(shared_address(&Vs[buf][j * VS + c]), inside ? vb + (i64)(k0 + j) * kv_stride + c : vb, inside ? 16 : 0);
        }
        cp_async_commit();
    };

    const int tiles = (Lk + BN - 1) / BN;
    // FP8P: pass 0 only finds the row maxima and sums; pass 1 (the only pass otherwise) accumulates P·V.
    for (int pass = FP8P ? 0 : 1; pass < 2; ++pass) {
    load_tile(0, 0, pass == 1);
    for (int tile = 0; tile < tiles; ++tile) {
        const int k0 = tile * BN, buf = tile & 1;
        if (tile + 1 < tiles) { load_tile(k0 + BN, buf ^ 1, pass == 1); cp_async_wait_one(); } else { cp_async_wait_all(); }
        __syncthreads();
        const half_t* Kt = Ks[buf];
        const half_t* Vt = Vs[buf];

        float s[MT][BN / 8][4];
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
            // K fragments by ldmatrix: lane l addresses row (l & 7) of 8×8 matrix (l >> 3); x4 covers two k-steps.
            const half_t* kfrag = Kt + (n * 8 + (lane & 7)) * KS + (lane >> 3) * 8;
#pragma unroll
            for (int ks = 0; ks + 1 < DP / 16; ks += 2) {
                u32 b0, b1, b2, b3;
                asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                             : "=r"(b0), "=r"(b1), "=r"(b2), "=r"(b3) : "r"(shared_address(kfrag + ks * 16)));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_16816(s[mt][n], qf[mt][ks], b0, b1);
                    mma_16816(s[mt][n], qf[mt][ks + 1], b2, b3);
                }
            }
            if ((DP / 16) % 2 == 1) {
                constexpr int ks = DP / 16 - 1;
                u32 b0, b1;
                asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                             : "=r"(b0), "=r"(b1)
                             : "r"(shared_address(Kt + (n * 8 + (lane & 7)) * KS + ks * 16 + ((lane >> 3) & 1) * 8)));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) mma_16816(s[mt][n], qf[mt][ks], b0, b1);
            }
        }

        const bool ragged = k0 + BN > Lk;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int n = 0; n < BN / 8; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    s[mt][n][e] *= scale_log2;
                    if (ragged && k0 + n * 8 + 2 * t + (e & 1) >= Lk) s[mt][n][e] = -D8_INFINITY;
                }
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                if (FP8P && pass == 1) {
                    // Final maximum and sum known: the normalised probabilities themselves.
#pragma unroll
                    for (int n = 0; n < BN / 8; ++n) {
                        s[mt][n][2 * r] = fast_exp2(s[mt][n][2 * r] - row_max[mt][r]) * row_inv[mt][r];
                        s[mt][n][2 * r + 1] = fast_exp2(s[mt][n][2 * r + 1] - row_max[mt][r]) * row_inv[mt][r];
                    }
                    continue;
                }
                float m = row_max[mt][r];
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) m = fmaxf(m, fmaxf(s[mt][n][2 * r], s[mt][n][2 * r + 1]));
                m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
                m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
                const float correction = fast_exp2(row_max[mt][r] - m);
                row_max[mt][r] = m;
                float sum = 0.f;
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) {
                    s[mt][n][2 * r] = fast_exp2(s[mt][n][2 * r] - m);
                    s[mt][n][2 * r + 1] = fast_exp2(s[mt][n][2 * r + 1] - m);
                    sum += s[mt][n][2 * r] + s[mt][n][2 * r + 1];
                }
                row_sum[mt][r] = row_sum[mt][r] * correction + sum;
                if (FP8P) continue;   // pass 0: nothing accumulated yet
#pragma unroll
                for (int j = 0; j < D / 8; ++j) { acc[mt][j][2 * r] *= correction; acc[mt][j][2 * r + 1] *= correction; }
            }
        }
        if (pass == 0) { __syncthreads(); continue; }

#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            u32 a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                a[mt][0] = pack_p<FP8P>(s[mt][2 * kk][0], s[mt][2 * kk][1], p_encode);
                a[mt][1] = pack_p<FP8P>(s[mt][2 * kk][2], s[mt][2 * kk][3], p_encode);
                a[mt][2] = pack_p<FP8P>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1], p_encode);
                a[mt][3] = pack_p<FP8P>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3], p_encode);
            }
            const half_t* vrow = Vt + (kk * 16 + (lane & 15)) * VS;
#pragma unroll
            for (int j = 0; j < D / 8; ++j) {
                u32 b0, b1;
                asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                             : "=r"(b0), "=r"(b1) : "r"(shared_address(vrow + j * 8)));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) mma_16816(acc[mt][j], a[mt], b0, b1);
            }
        }
        __syncthreads();   // everyone is done with `buf` before the next iteration refills it
    }
    if (pass == 1 && FP8P) break;   // the sums were reduced after pass 0
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            row_sum[mt][r] += __shfl_xor_sync(0xffffffffu, row_sum[mt][r], 1);
            row_sum[mt][r] += __shfl_xor_sync(0xffffffffu, row_sum[mt][r], 2);
            row_inv[mt][r] = 1.f / row_sum[mt][r];
        }
    }

#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = q0 + mt * 16 + g + 8 * r;
            if (row < Lq) {
                store_attention_row<D>(acc[mt], r, FP8P ? p_decode : row_inv[mt][r], o, codes, ((i64)b * Lq + row) * stride,
                                       h * D + 2 * t, smoothing, code_scale, format);
            }
        }
}
"""#

    /// The short-key kernel (cross-attention over at most 128 text tokens). The flash kernels give each block 64
    /// queries and reload the few keys per block, so their time is the latency of those loads; here each block copies
    /// all of its (batch, head)'s keys and values into shared memory once (cp.async, zero past Lk and K past D), and
    /// each warp then takes 16-query tiles in turn (w, w + 4·gridDim.x, …) with the next tile's Q fragments loading while
    /// it multiplies this one. All keys lie in one tile, so each row's maximum and sum are known before P·V: FP8P
    /// rounds the normalised probabilities (as `attention_fp8p_k128`), 16 bit multiplies O by 1/sum at the end.
    static let shortKeysBody = #"""

template <int D>
__device__ __forceinline__ void load_query_fragments(u32 (&qf)[(D + 15) / 16][4], const half_t* __restrict__ qb, int q0, int Lq,
                                                     int q_stride, int g, int t) {
#pragma unroll
    for (int s = 0; s < (D + 15) / 16; ++s) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int row = q0 + g + ((r & 1) ? 8 : 0);
            const int col = s * 16 + 2 * t + ((r & 2) ? 8 : 0);
            qf[s][r] = (row < Lq && col < D) ? *(const u32*)(qb + (i64)row * q_stride + col) : 0u;
        }
    }
}

template <int D, bool FP8P, int BN>
__device__ __forceinline__ void attention_short_keys(const half_t* __restrict__ q, const half_t* __restrict__ k,
        const half_t* __restrict__ v, half_t* __restrict__ o, int heads, int Lq, int Lk, float scale_log2, int q_stride, int kv_stride,
        float p_encode, float p_decode, unsigned char* __restrict__ codes, const float* __restrict__ smoothing, float code_scale,
        int format) {
    constexpr int DP = AttentionStrides<D>::DP, KS = AttentionStrides<D>::KS, VS = AttentionStrides<D>::VS;
    __shared__ D8_ALIGN16 half_t Ks[BN * KS];
    __shared__ D8_ALIGN16 half_t Vs[BN * VS];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int b = blockIdx.y / heads, h = blockIdx.y % heads;
    const int stride = heads * D;
    const half_t* qb = q + (i64)b * Lq * q_stride + h * D;
    const half_t* kb = k + (i64)b * Lk * kv_stride + h * D;
    const half_t* vb = v + (i64)b * Lk * kv_stride + h * D;

    for (int i = tid; i < BN * (DP / 8); i += 128) {
        const int j = i / (DP / 8), c = (i % (DP / 8)) * 8;
        const bool inside = j < Lk && c < D;
        cp_async16(shared_address(&Ks[j * KS + c]), inside ? kb + (i64)j * kv_stride + c : kb, inside ? 16 : 0);
    }
    for (int i = tid; i < BN * (D / 8); i += 128) {
        const int j = i / (D / 8), c = (i % (D / 8)) * 8;
        const bool inside = j < Lk;
        cp_async16(shared_address(&Vs[j * VS + c]), inside ? vb + (i64)j * kv_stride + c : vb, inside ? 16 : 0);
    }
    cp_async_commit();

    const int tiles = (Lq + 15) / 16, step = gridDim.x * 4;
    int tile = blockIdx.x * 4 + warp;
    u32 qa[DP / 16][4], qn[DP / 16][4];
    load_query_fragments<D>(qa, qb, tile * 16, Lq, q_stride, g, t);
    cp_async_wait_all();
    __syncthreads();

    // One 16-query tile: S = Q·Kᵀ over every key, the exact softmax, O = P·V, stored (or written as codes).
    auto attend = [&](const u32 (&qf)[DP / 16][4], int q0) {
        float s[BN / 8][4];
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
            if (n * 8 >= Lk) continue;   // masked below
            const half_t* kfrag = Ks + (n * 8 + (lane & 7)) * KS + (lane >> 3) * 8;
#pragma unroll
            for (int ks = 0; ks + 1 < DP / 16; ks += 2) {
                u32 b0, b1, b2, b3;
                asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                             : "=r"(b0), "=r"(b1), "=r"(b2), "=r"(b3) : "r"(shared_address(kfrag + ks * 16)));
                mma_16816(s[n], qf[ks], b0, b1);
                mma_16816(s[n], qf[ks + 1], b2, b3);
            }
            if ((DP / 16) % 2 == 1) {
                constexpr int ks = DP / 16 - 1;
                u32 b0, b1;
                asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                             : "=r"(b0), "=r"(b1)
                             : "r"(shared_address(Ks + (n * 8 + (lane & 7)) * KS + ks * 16 + ((lane >> 3) & 1) * 8)));
                mma_16816(s[n], qf[ks], b0, b1);
            }
        }
        float scale[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float m = -D8_INFINITY;
#pragma unroll
            for (int n = 0; n < BN / 8; ++n)
#pragma unroll
                for (int e = 2 * r; e < 2 * r + 2; ++e) {
                    s[n][e] = n * 8 + 2 * t + (e & 1) < Lk ? s[n][e] * scale_log2 : -D8_INFINITY;
                    m = fmaxf(m, s[n][e]);
                }
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
            float sum = 0.f;
#pragma unroll
            for (int n = 0; n < BN / 8; ++n) {
                s[n][2 * r] = fast_exp2(s[n][2 * r] - m);
                s[n][2 * r + 1] = fast_exp2(s[n][2 * r + 1] - m);
                sum += s[n][2 * r] + s[n][2 * r + 1];
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const float inv = 1.f / sum;
            if (FP8P) {
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) { s[n][2 * r] *= inv; s[n][2 * r + 1] *= inv; }
            }
            scale[r] = FP8P ? p_decode : inv;
        }
        float acc[D / 8][4];
#pragma unroll
        for (int j = 0; j < D / 8; ++j) { acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f; }
        accumulate_pv<D, FP8P, BN, VS>(acc, s, Vs, lane, p_encode, true, 0, Lk);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = q0 + g + 8 * r;
            if (row < Lq) {
                store_attention_row<D>(acc, r, scale[r], o, codes, ((i64)b * Lq + row) * stride, h * D + 2 * t, smoothing,
                                       code_scale, format);
            }
        }
    };

    // Two fragment buffers in turn, so that a tile's Q loads are in flight while the previous tile is multiplied.
    for (; tile < tiles; tile += 2 * step) {
        load_query_fragments<D>(qn, qb, (tile + step) * 16, Lq, q_stride, g, t);
        attend(qa, tile * 16);
        if (tile + step >= tiles) break;
        load_query_fragments<D>(qa, qb, (tile + 2 * step) * 16, Lq, q_stride, g, t);
        attend(qn, (tile + step) * 16);
    }
}
"""#

    static let body = #"""

__device__ __forceinline__ void mma_16816(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." D8_MMA_TYPE "." D8_MMA_TYPE ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ u32 shared_address(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// O += P·V for one warp's 16 rows over the tile of keys from k0 in shared memory (rows of VS halves): two accumulator
// n-tiles of P form one A fragment (k = 16 keys), V fragments by `ldmatrix.trans`; with `stops`, only up to key Lk.
template <int D, bool FP8P, int BN, int VS>
__device__ __forceinline__ void accumulate_pv(float (&acc)[D / 8][4], const float (&s)[BN / 8][4], const half_t* Vt, int lane,
                                              float p_encode, bool stops, int k0, int Lk) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
        if (stops && k0 + kk * 16 >= Lk) break;
        u32 a[4];
        a[0] = pack_p<FP8P>(s[2 * kk][0], s[2 * kk][1], p_encode);
        a[1] = pack_p<FP8P>(s[2 * kk][2], s[2 * kk][3], p_encode);
        a[2] = pack_p<FP8P>(s[2 * kk + 1][0], s[2 * kk + 1][1], p_encode);
        a[3] = pack_p<FP8P>(s[2 * kk + 1][2], s[2 * kk + 1][3], p_encode);
        const half_t* vrow = Vt + (kk * 16 + (lane & 15)) * VS;
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
            u32 b0, b1;
            asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                         : "=r"(b0), "=r"(b1) : "r"(shared_address(vrow + j * 8)));
            mma_16816(acc[j], a, b0, b1);
        }
    }
}

// q: rows of q_stride halves, k, v: rows of kv_stride halves (head h at column h*D); o: [B, Lq, heads*D]. Grid (ceil(Lq/64), B*heads), block 128.
// BN: keys per tile. FP8P with all keys in one tile (Lk <= BN) and no pmax: one pass, as the tile's maximum and sum are
// the row's (the probabilities two passes of the same BN give, bit for bit).
template <int D, bool FP8P, int BN = 64>
__device__ __forceinline__ void attention_tile(const half_t* __restrict__ q, const half_t* __restrict__ k,
        const half_t* __restrict__ v, half_t* __restrict__ o, int heads, int Lq, int Lk, float scale_log2, int q_stride, int kv_stride,
        float p_encode, float p_decode, float* pmax, unsigned char* __restrict__ codes, const float* __restrict__ smoothing,
        float code_scale, int format) {
    constexpr int BM = 64;
    const bool single = FP8P && Lk <= BN && pmax == nullptr;
    constexpr int DP = AttentionStrides<D>::DP, KS = AttentionStrides<D>::KS, VS = AttentionStrides<D>::VS;
    __shared__ D8_ALIGN16 half_t Ks[BN * KS];
    __shared__ D8_ALIGN16 half_t Vs[BN * VS];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int b = blockIdx.y / heads, h = blockIdx.y % heads;
    const int stride = heads * D;
    const int q0 = blockIdx.x * BM + warp * 16;
    const half_t* qb = q + (i64)b * Lq * q_stride + h * D;
    const half_t* kb = k + (i64)b * Lk * kv_stride + h * D;
    const half_t* vb = v + (i64)b * Lk * kv_stride + h * D;

    // Q as A fragments, zero beyond D and beyond Lq.
    u32 qf[DP / 16][4];
#pragma unroll
    for (int s = 0; s < DP / 16; ++s) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int row = q0 + g + ((r & 1) ? 8 : 0);
            const int col = s * 16 + 2 * t + ((r & 2) ? 8 : 0);
            qf[s][r] = (row < Lq && col < D) ? *(const u32*)(qb + (i64)row * q_stride + col) : 0u;
        }
    }

    float acc[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; ++j) { acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f; }
    float row_max[2] = {-D8_INFINITY, -D8_INFINITY}, row_sum[2] = {0.f, 0.f}, row_inv[2] = {1.f, 1.f};

    // FP8P: pass 0 only finds the row maxima and sums; pass 1 (the only pass otherwise) accumulates P·V.
    for (int pass = FP8P && !single ? 0 : 1; pass < 2; ++pass) {
    for (int k0 = 0; k0 < Lk; k0 += BN) {
        __syncthreads();
        // K tile [BN, DP] and V tile [BN, D] into shared memory, 16 bytes at a time, zero past the ends.
        for (int i = tid; i < BN * (DP / 8); i += 128) {
            const int j = i / (DP / 8), c = (i % (DP / 8)) * 8;
            vec16 val = {0u, 0u, 0u, 0u};
            if (k0 + j < Lk && c < D) val = *(const vec16*)(kb + (i64)(k0 + j) * kv_stride + c);
            *(vec16*)(Ks + j * KS + c) = val;
        }
        for (int i = tid; pass == 1 && i < BN * (D / 8); i += 128) {   // pass 0 needs no values
            const int j = i / (D / 8), c = (i % (D / 8)) * 8;
            vec16 val = {0u, 0u, 0u, 0u};
            if (k0 + j < Lk) val = *(const vec16*)(vb + (i64)(k0 + j) * kv_stride + c);
            *(vec16*)(Vs + j * VS + c) = val;
        }
        __syncthreads();

        // S = Q·Kᵀ for this warp's 16 rows and the tile's 64 keys (8 n-tiles of 8).
        float s[BN / 8][4];
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
            if (single && k0 + n * 8 >= Lk) continue;   // keys past the end: masked below
            const half_t* krow = Ks + (n * 8 + g) * KS + 2 * t;
#pragma unroll
            for (int ks = 0; ks < DP / 16; ++ks) {
                const u32 b0 = *(const u32*)(krow + ks * 16);
                const u32 b1 = *(const u32*)(krow + ks * 16 + 8);
                mma_16816(s[n], qf[ks], b0, b1);
            }
        }

        // Online softmax (base 2). Keys past Lk get -inf.
        const bool ragged = k0 + BN > Lk;
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[n][e] *= scale_log2;
                if (ragged && k0 + n * 8 + 2 * t + (e & 1) >= Lk) s[n][e] = -D8_INFINITY;
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            if (FP8P && pass == 1 && !single) {
                // Final maximum and sum known: the normalised probabilities themselves.
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) {
                    s[n][2 * r] = fast_exp2(s[n][2 * r] - row_max[r]) * row_inv[r];
                    s[n][2 * r + 1] = fast_exp2(s[n][2 * r + 1] - row_max[r]) * row_inv[r];
                }
                continue;
            }
            float m = row_max[r];
#pragma unroll
            for (int n = 0; n < BN / 8; ++n) m = fmaxf(m, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
            const float correction = fast_exp2(row_max[r] - m);
            row_max[r] = m;
            float sum = 0.f;
#pragma unroll
            for (int n = 0; n < BN / 8; ++n) {
                s[n][2 * r] = fast_exp2(s[n][2 * r] - m);
                s[n][2 * r + 1] = fast_exp2(s[n][2 * r + 1] - m);
                sum += s[n][2 * r] + s[n][2 * r + 1];
            }
            row_sum[r] = row_sum[r] * correction + sum;   // per-thread partial; the quad is summed at the end
#pragma unroll
            for (int j = 0; j < D / 8; ++j) { acc[j][2 * r] *= correction; acc[j][2 * r + 1] *= correction; }
            if (FP8P && single) {
                // The only tile: its maximum and (quad-summed) sum are the row's, so normalise now, as pass 1 would.
                float total = row_sum[r] + __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
                total += __shfl_xor_sync(0xffffffffu, total, 2);
                const float inv = 1.f / total;
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) { s[n][2 * r] *= inv; s[n][2 * r + 1] *= inv; }
            }
        }
        if (pass == 0) continue;

        // O += P·V; with one pass, the tile's keys only.
        accumulate_pv<D, FP8P, BN, VS>(acc, s, Vs, lane, p_encode, single, k0, Lk);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        if (pass == 1 && FP8P) break;   // the sums were reduced after pass 0
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
        row_inv[r] = 1.f / row_sum[r];
    }
    if (FP8P && pmax != nullptr) {
        // Calibration: each row's largest probability is exp2(0)/Σ = 1/Σ; the block's maximum joins *pmax (positive
        // floats order as their bit patterns).
        float m = 0.f;
#pragma unroll
        for (int r = 0; r < 2; ++r) if (q0 + g + 8 * r < Lq) m = fmaxf(m, row_inv[r]);
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
        if (lane == 0) atomicMax((int*)pmax, __float_as_int(m));
        return;
    }
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = q0 + g + 8 * r;
        if (row < Lq) {
            store_attention_row<D>(acc, r, FP8P ? p_decode : row_inv[r], o, codes, ((i64)b * Lq + row) * stride, h * D + 2 * t,
                                   smoothing, code_scale, format);
        }
    }
}
"""#
}

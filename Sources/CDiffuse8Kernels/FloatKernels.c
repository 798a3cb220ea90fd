#include "FloatKernels.h"
#include <stdint.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define D8_X86_64 1
#endif

#define D8_UNROLL _Pragma("clang loop unroll(full)")

#if D8_X86_64

/// AVX2 + FMA: 6 × 16 tile, 12 YMM accumulators (+ 2 for B, 1 broadcast of A) of the 16 registers.
enum { AVX2_MR = 6, AVX2_NV = 2, AVX2_NR = 8 * AVX2_NV };

/// AVX-512F: 12 × 32 tile, 24 ZMM accumulators (+ 2 for B, 1 broadcast of A) of the 32 registers: per depth step
/// two B loads and twelve broadcasts feed 24 FMAs (the AVX2 tile needs 8 loads for 12).
enum { AVX512_MR = 12, AVX512_NV = 2, AVX512_NR = 16 * AVX512_NV };

__attribute__((target("avx2,fma")))
static inline void tile_avx2(size_t depth, const float *a, const float *b, float *c, size_t ldc, size_t rows,
                             size_t columns, int initial, const float *bias) {
    __m256 acc[AVX2_MR][AVX2_NV];
    D8_UNROLL for (int r = 0; r < AVX2_MR; r++) D8_UNROLL for (int v = 0; v < AVX2_NV; v++) acc[r][v] = _mm256_setzero_ps();
    for (size_t p = 0; p < depth; p++) {
        __m256 bv[AVX2_NV];
        D8_UNROLL for (int v = 0; v < AVX2_NV; v++) bv[v] = _mm256_loadu_ps(b + 8 * v);
        D8_UNROLL for (int r = 0; r < AVX2_MR; r++) {
            __m256 av = _mm256_broadcast_ss(a + r);
            D8_UNROLL for (int v = 0; v < AVX2_NV; v++) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
        }
        a += AVX2_MR;
        b += AVX2_NR;
    }
    // Lane masks for the columns that exist (all lanes inside the matrix in the common case).
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i mask[AVX2_NV];
    D8_UNROLL for (int v = 0; v < AVX2_NV; v++) mask[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)columns - 8 * v), lanes);
    const int full = columns == AVX2_NR;
    D8_UNROLL for (int r = 0; r < AVX2_MR; r++) {
        if ((size_t)r >= rows) break;
        float *row = c + r * ldc;
        D8_UNROLL for (int v = 0; v < AVX2_NV; v++) {
            __m256 x = acc[r][v];
            if (full) {
                switch (initial) {
                case D8_F32_ACCUMULATE: x = _mm256_add_ps(x, _mm256_loadu_ps(row + 8 * v)); break;
                case D8_F32_COLUMN_BIAS: x = _mm256_add_ps(x, _mm256_loadu_ps(bias + 8 * v)); break;
                case D8_F32_ROW_BIAS: x = _mm256_add_ps(x, _mm256_set1_ps(bias[r])); break;
                default: break;
                }
                _mm256_storeu_ps(row + 8 * v, x);
            } else {
                switch (initial) {
                case D8_F32_ACCUMULATE: x = _mm256_add_ps(x, _mm256_maskload_ps(row + 8 * v, mask[v])); break;
                case D8_F32_COLUMN_BIAS: x = _mm256_add_ps(x, _mm256_maskload_ps(bias + 8 * v, mask[v])); break;
                case D8_F32_ROW_BIAS: x = _mm256_add_ps(x, _mm256_set1_ps(bias[r])); break;
                default: break;
                }
                _mm256_maskstore_ps(row + 8 * v, mask[v], x);
            }
        }
    }
}

__attribute__((target("avx2,fma")))
static void block_avx2(size_t rows, size_t columns, size_t depth, const float *packedA, const float *packedB,
                       float *c, size_t ldc, int initial, const float *bias) {
    for (size_t jj = 0; jj < columns; jj += AVX2_NR) {
        const float *b = packedB + jj * depth;
        const size_t valid = columns - jj < AVX2_NR ? columns - jj : AVX2_NR;
        for (size_t ii = 0; ii < rows; ii += AVX2_MR) {
            const size_t height = rows - ii < AVX2_MR ? rows - ii : AVX2_MR;
            const float *tileBias = initial == D8_F32_COLUMN_BIAS ? bias + jj : initial == D8_F32_ROW_BIAS ? bias + ii : bias;
            tile_avx2(depth, packedA + ii * depth, b, c + ii * ldc + jj, ldc, height, valid, initial, tileBias);
        }
    }
}

__attribute__((target("avx512f")))
static inline void tile_avx512(size_t depth, const float *a, const float *b, float *c, size_t ldc, size_t rows,
                               size_t columns, int initial, const float *bias) {
    __m512 acc[AVX512_MR][AVX512_NV];
    D8_UNROLL for (int r = 0; r < AVX512_MR; r++) D8_UNROLL for (int v = 0; v < AVX512_NV; v++) acc[r][v] = _mm512_setzero_ps();
    for (size_t p = 0; p < depth; p++) {
        __m512 bv[AVX512_NV];
        D8_UNROLL for (int v = 0; v < AVX512_NV; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
        D8_UNROLL for (int r = 0; r < AVX512_MR; r++) {
            __m512 av = _mm512_set1_ps(a[r]);
            D8_UNROLL for (int v = 0; v < AVX512_NV; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
        a += AVX512_MR;
        b += AVX512_NR;
    }
    __mmask16 mask[AVX512_NV];
    D8_UNROLL for (int v = 0; v < AVX512_NV; v++) {
        const long left = (long)columns - 16 * v;
        mask[v] = left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
    }
    D8_UNROLL for (int r = 0; r < AVX512_MR; r++) {
        if ((size_t)r >= rows) break;
        float *row = c + r * ldc;
        D8_UNROLL for (int v = 0; v < AVX512_NV; v++) {
            __m512 x = acc[r][v];
            switch (initial) {
            case D8_F32_ACCUMULATE: x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask[v], row + 16 * v)); break;
            case D8_F32_COLUMN_BIAS: x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask[v], bias + 16 * v)); break;
            case D8_F32_ROW_BIAS: x = _mm512_add_ps(x, _mm512_set1_ps(bias[r])); break;
            default: break;
            }
            _mm512_mask_storeu_ps(row + 16 * v, mask[v], x);
        }
    }
}

__attribute__((target("avx512f")))
static void block_avx512(size_t rows, size_t columns, size_t depth, const float *packedA, const float *packedB,
                         float *c, size_t ldc, int initial, const float *bias) {
    for (size_t jj = 0; jj < columns; jj += AVX512_NR) {
        const float *b = packedB + jj * depth;
        const size_t valid = columns - jj < AVX512_NR ? columns - jj : AVX512_NR;
        for (size_t ii = 0; ii < rows; ii += AVX512_MR) {
            const size_t height = rows - ii < AVX512_MR ? rows - ii : AVX512_MR;
            const float *tileBias = initial == D8_F32_COLUMN_BIAS ? bias + jj : initial == D8_F32_ROW_BIAS ? bias + ii : bias;
            tile_avx512(depth, packedA + ii * depth, b, c + ii * ldc + jj, ldc, height, valid, initial, tileBias);
        }
    }
}

#endif

int d8_f32_supported(int variant) {
    switch (variant) {
    case D8_F32_PORTABLE: return 1;
#if D8_X86_64
    case D8_F32_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case D8_F32_AVX512: return __builtin_cpu_supports("avx512f");
#endif
    default: return 0;
    }
}

int d8_f32_best(void) {
    static const int order[] = {D8_F32_AVX512, D8_F32_AVX2};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) if (d8_f32_supported(order[i])) return order[i];
    return D8_F32_PORTABLE;
}

int d8_f32_tile_rows(int variant) {
    switch (variant) {
#if D8_X86_64
    case D8_F32_AVX2: return AVX2_MR;
    case D8_F32_AVX512: return AVX512_MR;
#endif
    default: return 0;
    }
}

int d8_f32_tile_columns(int variant) {
    switch (variant) {
#if D8_X86_64
    case D8_F32_AVX2: return AVX2_NR;
    case D8_F32_AVX512: return AVX512_NR;
#endif
    default: return 0;
    }
}

void d8_f32_block(int variant, size_t rows, size_t columns, size_t depth, const float *packedA, const float *packedB,
                  float *c, size_t ldc, int initial, const float *bias) {
    switch (variant) {
#if D8_X86_64
    case D8_F32_AVX2: block_avx2(rows, columns, depth, packedA, packedB, c, ldc, initial, bias); return;
    case D8_F32_AVX512: block_avx512(rows, columns, depth, packedA, packedB, c, ldc, initial, bias); return;
#endif
    default: __builtin_trap();
    }
}

/// One sliver of a compile-time height: each row read contiguously, written with stride `mr`.
static inline __attribute__((always_inline)) void pack_a_sliver(size_t mr, const float *a, size_t lda, size_t rows,
                                                                 size_t depth, float *out) {
    for (size_t r = 0; r < mr; r++) {
        if (r < rows) {
            const float *src = a + r * lda;
            for (size_t p = 0; p < depth; p++) out[p * mr + r] = src[p];
        } else {
            for (size_t p = 0; p < depth; p++) out[p * mr + r] = 0;
        }
    }
}

#if D8_X86_64
/// Columns p … p + 7 of four rows, transposed: returns, for j = 0 … 3, (r0[j], r1[j], r2[j], r3[j]) in the low half
/// and (r0[j + 4], …, r3[j + 4]) in the high half of `t[j]`.
__attribute__((target("avx2")))
static inline void transpose_4x8(__m256 r0, __m256 r1, __m256 r2, __m256 r3, __m256 t[4]) {
    const __m256 a = _mm256_unpacklo_ps(r0, r1), b = _mm256_unpackhi_ps(r0, r1);
    const __m256 c = _mm256_unpacklo_ps(r2, r3), d = _mm256_unpackhi_ps(r2, r3);
    t[0] = _mm256_shuffle_ps(a, c, 0x44);
    t[1] = _mm256_shuffle_ps(a, c, 0xEE);
    t[2] = _mm256_shuffle_ps(b, d, 0x44);
    t[3] = _mm256_shuffle_ps(b, d, 0xEE);
}

/// Rows `r` … `r + 3` of a full sliver (8 columns from `src`) written to out[j·mr + r + 0…3], j = 0 … 7.
__attribute__((target("avx2")))
static inline void pack_a_quad(const float *src, size_t lda, size_t mr, float *out) {
    __m256 t[4];
    transpose_4x8(_mm256_loadu_ps(src), _mm256_loadu_ps(src + lda), _mm256_loadu_ps(src + 2 * lda),
                  _mm256_loadu_ps(src + 3 * lda), t);
    for (int j = 0; j < 4; j++) {
        _mm_storeu_ps(out + j * mr, _mm256_castps256_ps128(t[j]));
        _mm_storeu_ps(out + (j + 4) * mr, _mm256_extractf128_ps(t[j], 1));
    }
}

/// Rows `r` and `r + 1` of a full sliver (8 columns from `src`) written to out[j·mr + r + 0…1], j = 0 … 7.
__attribute__((target("avx2")))
static inline void pack_a_pair(const float *src, size_t lda, size_t mr, float *out) {
    const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lda);
    const __m256 lo = _mm256_unpacklo_ps(r0, r1), hi = _mm256_unpackhi_ps(r0, r1);
    const __m128 q[4] = {_mm256_castps256_ps128(lo), _mm256_castps256_ps128(hi), _mm256_extractf128_ps(lo, 1),
                         _mm256_extractf128_ps(hi, 1)};
    for (int i = 0; i < 4; i++) {
        _mm_storel_pi((__m64 *)(out + (2 * i) * mr), q[i]);
        _mm_storeh_pi((__m64 *)(out + (2 * i + 1) * mr), q[i]);
    }
}

/// A full sliver of `mr` (even) rows: the same layout as `pack_a_sliver`, 4 × 8 blocks transposed in
/// registers (the scalar copy stores one float at a time with stride `mr`).
__attribute__((target("avx2")))
static void pack_a_sliver_avx2(size_t mr, const float *a, size_t lda, size_t depth, float *out) {
    size_t p = 0;
    for (; p + 8 <= depth; p += 8) {
        size_t r = 0;
        for (; r + 4 <= mr; r += 4) pack_a_quad(a + r * lda + p, lda, mr, out + p * mr + r);
        if (r < mr) pack_a_pair(a + r * lda + p, lda, mr, out + p * mr + r);
    }
    for (; p < depth; p++) for (size_t r = 0; r < mr; r++) out[p * mr + r] = a[r * lda + p];
}

#endif

#if D8_X86_64
/// Cephes `expf` on 8 lanes, as `VectorMath.exp`: ln 2 split in two for the range reduction, degree-5 polynomial,
/// 2ⁿ built in the exponent bits. The clamps keep a NaN input NaN.
__attribute__((target("avx2,fma")))
static inline __m256 exp_avx2(__m256 input) {
    const __m256 magic = _mm256_set1_ps(12582912.0f); // 1.5·2²³: adding it rounds to an integer in the low mantissa bits.
    __m256 x = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), input);
    x = _mm256_max_ps(_mm256_set1_ps(-87.3365447505531f), x);
    const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
    const __m256 n = _mm256_sub_ps(t, magic);
    x = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), x);
    x = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i bits = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(magic));
    const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(y, scale);
}

__attribute__((target("avx2,fma")))
static float exponentiate_row_avx2(float *row, size_t count, float scale) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const size_t whole = count / 8 * 8, rest = count - whole;
    const __m256i tailMask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rest), lanes);
    const __m256 negativeInfinity = _mm256_set1_ps(-__builtin_inff());
    // The maximum, two accumulators deep.
    __m256 m0 = negativeInfinity, m1 = negativeInfinity;
    size_t i = 0;
    for (; i + 16 <= whole; i += 16) {
        m0 = _mm256_max_ps(m0, _mm256_loadu_ps(row + i));
        m1 = _mm256_max_ps(m1, _mm256_loadu_ps(row + i + 8));
    }
    if (i < whole) m0 = _mm256_max_ps(m0, _mm256_loadu_ps(row + i));
    if (rest) m1 = _mm256_max_ps(m1, _mm256_blendv_ps(negativeInfinity, _mm256_maskload_ps(row + whole, tailMask),
                                                      _mm256_castsi256_ps(tailMask)));
    __m256 m = _mm256_max_ps(m0, m1);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float maximum = _mm_cvtss_f32(h);
    // exp(scale · x − scale · max), summed.
    const __m256 shift = _mm256_set1_ps(-maximum * scale), s = _mm256_set1_ps(scale);
    __m256 sum0 = _mm256_setzero_ps(), sum1 = _mm256_setzero_ps();
    for (i = 0; i + 16 <= whole; i += 16) {
        const __m256 e0 = exp_avx2(_mm256_fmadd_ps(_mm256_loadu_ps(row + i), s, shift));
        const __m256 e1 = exp_avx2(_mm256_fmadd_ps(_mm256_loadu_ps(row + i + 8), s, shift));
        _mm256_storeu_ps(row + i, e0);
        _mm256_storeu_ps(row + i + 8, e1);
        sum0 = _mm256_add_ps(sum0, e0);
        sum1 = _mm256_add_ps(sum1, e1);
    }
    if (i < whole) {
        const __m256 e = exp_avx2(_mm256_fmadd_ps(_mm256_loadu_ps(row + i), s, shift));
        _mm256_storeu_ps(row + i, e);
        sum0 = _mm256_add_ps(sum0, e);
    }
    if (rest) {
        const __m256 e = _mm256_and_ps(exp_avx2(_mm256_fmadd_ps(_mm256_maskload_ps(row + whole, tailMask), s, shift)),
                                       _mm256_castsi256_ps(tailMask));
        _mm256_maskstore_ps(row + whole, tailMask, e);
        sum1 = _mm256_add_ps(sum1, e);
    }
    const __m256 total = _mm256_add_ps(sum0, sum1);
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}
#endif

int d8_f32_exponentiate_row_supported(void) {
#if D8_X86_64
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

float d8_f32_exponentiate_row(float *row, size_t count, float scale) {
#if D8_X86_64
    return exponentiate_row_avx2(row, count, scale);
#else
    (void)row; (void)count; (void)scale;
    __builtin_trap();
#endif
}

void d8_f32_pack_a(size_t mr, const float *a, size_t lda, size_t rows, size_t depth, float *out) {
#if D8_X86_64
    const int vector = mr % 2 == 0 && __builtin_cpu_supports("avx2");
#endif
    for (size_t r0 = 0; r0 < rows; r0 += mr) {
        const size_t height = rows - r0 < mr ? rows - r0 : mr;
        float *dst = out + r0 * depth;
#if D8_X86_64
        if (vector && height == mr) {
            pack_a_sliver_avx2(mr, a + r0 * lda, lda, depth, dst);
            continue;
        }
#endif
        switch (mr) {
        case 6: pack_a_sliver(6, a + r0 * lda, lda, height, depth, dst); break;
        case 12: pack_a_sliver(12, a + r0 * lda, lda, height, depth, dst); break;
        default: pack_a_sliver(mr, a + r0 * lda, lda, height, depth, dst); break;
        }
    }
}

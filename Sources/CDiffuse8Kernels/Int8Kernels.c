#include "Int8Kernels.h"
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define D8_X86 1
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#include <asm/hwcap.h>
#endif
#endif

enum { MR = D8_INT8_MR, NR = D8_INT8_NR };

/// Reference: plain integer loops on the signed codes. Each k group of the panel is first spread into four
/// contiguous INT16 rows, so that the column loop is unit-stride and the compiler vectorises it with the baseline
/// instruction set (SSE2, NEON).
static void tile_portable(const uint8_t *a, size_t lda, const int8_t *b, const int32_t *compensation,
                          size_t kgroups, int32_t *c) {
    (void)compensation;
    int32_t acc[MR][NR];
    int16_t bt[4][NR];
    memset(acc, 0, sizeof acc);
    for (size_t g = 0; g < kgroups; g++) {
        const int8_t *bg = b + g * NR * 4;
        for (int j = 0; j < NR; j++) for (int t = 0; t < 4; t++) bt[t][j] = bg[j * 4 + t];
        for (int r = 0; r < MR; r++) {
            const uint8_t *ar = a + r * lda + g * 4;
            int16_t a0 = (int16_t)(ar[0] - 128), a1 = (int16_t)(ar[1] - 128), a2 = (int16_t)(ar[2] - 128), a3 = (int16_t)(ar[3] - 128);
            for (int j = 0; j < NR; j++) {
                acc[r][j] += (int32_t)a0 * bt[0][j] + (int32_t)a1 * bt[1][j] + (int32_t)a2 * bt[2][j] + (int32_t)a3 * bt[3][j];
            }
        }
    }
    memcpy(c, acc, sizeof acc);
}

#if D8_X86
/// AVX-512 VNNI: vpdpbusd (u8 x s8, four products per INT32 lane, no saturation); 12 ZMM accumulators.
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void tile_avx512vnni(const uint8_t *a, size_t lda, const int8_t *b, const int32_t *compensation,
                            size_t kgroups, int32_t *c) {
    __m512i lo = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(compensation));
    __m512i hi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(compensation + 16));
    __m512i c00 = lo, c01 = hi, c10 = lo, c11 = hi, c20 = lo, c21 = hi;
    __m512i c30 = lo, c31 = hi, c40 = lo, c41 = hi, c50 = lo, c51 = hi;
    const uint8_t *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
    for (size_t g = 0; g < kgroups; g++) {
        __m512i b0 = _mm512_loadu_si512(b + g * 128);
        __m512i b1 = _mm512_loadu_si512(b + g * 128 + 64);
        int32_t v;
        __m512i x;
#define D8_ROW(ar, p, q) memcpy(&v, ar + 4 * g, 4); x = _mm512_set1_epi32(v); \
        p = _mm512_dpbusd_epi32(p, x, b0); q = _mm512_dpbusd_epi32(q, x, b1);
        D8_ROW(a0, c00, c01) D8_ROW(a1, c10, c11) D8_ROW(a2, c20, c21)
        D8_ROW(a3, c30, c31) D8_ROW(a4, c40, c41) D8_ROW(a5, c50, c51)
#undef D8_ROW
    }
    _mm512_storeu_si512(c + 0 * NR, c00); _mm512_storeu_si512(c + 0 * NR + 16, c01);
    _mm512_storeu_si512(c + 1 * NR, c10); _mm512_storeu_si512(c + 1 * NR + 16, c11);
    _mm512_storeu_si512(c + 2 * NR, c20); _mm512_storeu_si512(c + 2 * NR + 16, c21);
    _mm512_storeu_si512(c + 3 * NR, c30); _mm512_storeu_si512(c + 3 * NR + 16, c31);
    _mm512_storeu_si512(c + 4 * NR, c40); _mm512_storeu_si512(c + 4 * NR + 16, c41);
    _mm512_storeu_si512(c + 5 * NR, c50); _mm512_storeu_si512(c + 5 * NR + 16, c51);
}

/// AVX2: both operands widened to INT16 (A as code = u - 128, B sign-extended), vpmaddwd sums pairs into INT32.
/// Exact: |product| <= 2^14, a pair sum fits easily (vpmaddubsw on u8 x s8 would saturate at 2^15).
/// A YMM of B holds 4 columns x 4 k; each column's sum ends up in two lanes, added at the end.
/// A arrives widened (rows of INT16 codes, `ldw` codes apart: four codes = one 64-bit broadcast per row and k group),
/// the columns go in four blocks of 8 (12 accumulators + 2 B + 1 A of 16 YMM registers).
enum { AVX2_STACK_GROUPS = 1024 };

__attribute__((target("avx2")))
static void tile_avx2_widened(const int16_t *wide, size_t ldw, const int8_t *b, size_t kgroups, int32_t *c) {
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    const int16_t *w0 = wide, *w1 = wide + ldw, *w2 = wide + 2 * ldw, *w3 = wide + 3 * ldw, *w4 = wide + 4 * ldw,
                  *w5 = wide + 5 * ldw;
    for (int block = 0; block < NR / 8; block++) {
        __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
        __m256i a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
        const int8_t *bg = b + block * 32;
        for (size_t g = 0; g < kgroups; g++, bg += NR * 4) {
            __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)bg));
            __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(bg + 16)));
            __m256i x;
            int64_t v;
#define D8_ROW(wr, p, q) memcpy(&v, wr + 4 * g, 8); x = _mm256_set1_epi64x(v); \
            p = _mm256_add_epi32(p, _mm256_madd_epi16(x, b0)); q = _mm256_add_epi32(q, _mm256_madd_epi16(x, b1));
            D8_ROW(w0, a00, a01) D8_ROW(w1, a10, a11) D8_ROW(w2, a20, a21)
            D8_ROW(w3, a30, a31) D8_ROW(w4, a40, a41) D8_ROW(w5, a50, a51)
#undef D8_ROW
        }
#define D8_STORE(r, p, q) _mm256_storeu_si256((__m256i *)(c + r * NR + block * 8), \
            _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(p, q), order));
        D8_STORE(0, a00, a01) D8_STORE(1, a10, a11) D8_STORE(2, a20, a21)
        D8_STORE(3, a30, a31) D8_STORE(4, a40, a41) D8_STORE(5, a50, a51)
#undef D8_STORE
    }
}

/// Widens `rows` rows of A (codes + 128, `lda` bytes apart, 4 * kgroups used) into INT16 codes u - 128, `ldw` codes
/// apart: one XOR flips u to u - 128 and one sign extension widens, 16 codes at a time.
__attribute__((target("avx2")))
static void widen_avx2(const uint8_t *a, size_t lda, size_t rows, size_t kgroups, int16_t *wide, size_t ldw) {
    const __m128i flip = _mm_set1_epi8((char)0x80);
    const size_t k = 4 * kgroups;
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *row = a + r * lda;
        int16_t *w = wide + r * ldw;
        size_t i = 0;
        for (; i + 16 <= k; i += 16) {
            __m256i codes = _mm256_cvtepi8_epi16(_mm_xor_si128(_mm_loadu_si128((const __m128i *)(row + i)), flip));
            _mm256_storeu_si256((__m256i *)(w + i), codes);
        }
        for (; i < k; i++) w[i] = (int16_t)row[i] - 128;
    }
}

__attribute__((target("avx2")))
static void tile_avx2(const uint8_t *a, size_t lda, const int8_t *b, const int32_t *compensation,
                      size_t kgroups, int32_t *c) {
    (void)compensation;
    int16_t stack[AVX2_STACK_GROUPS * 4 * MR];
    int16_t *wide = kgroups <= AVX2_STACK_GROUPS ? stack : (int16_t *)malloc(kgroups * 4 * MR * sizeof(int16_t));
    if (!wide) { tile_portable(a, lda, b, compensation, kgroups, c); return; }
    widen_avx2(a, lda, MR, kgroups, wide, 4 * kgroups);
    tile_avx2_widened(wide, 4 * kgroups, b, kgroups, c);
    if (wide != stack) free(wide);
}
#endif

void d8_int8_avx2_widen(const uint8_t *a, size_t lda, size_t rows, size_t kgroups, int16_t *wide) {
#if D8_X86
    widen_avx2(a, lda, rows, kgroups, wide, 4 * kgroups);
#else
    (void)a; (void)lda; (void)rows; (void)kgroups; (void)wide;
    abort();
#endif
}

void d8_int8_avx2_tile_widened(const int16_t *wide, const int8_t *b, size_t kgroups, int32_t *c) {
#if D8_X86
    tile_avx2_widened(wide, 4 * kgroups, b, kgroups, c);
#else
    (void)wide; (void)b; (void)kgroups; (void)c;
    abort();
#endif
}

#if defined(__aarch64__)
/// NEON dot product (ARMv8.2 sdot, s8 x s8): A bytes flipped to signed codes; columns in two blocks of 16.
__attribute__((target("dotprod")))
static void tile_neon_dot(const uint8_t *a, size_t lda, const int8_t *b, const int32_t *compensation,
                          size_t kgroups, int32_t *c) {
    (void)compensation;
    const uint8x16_t flip = vdupq_n_u8(0x80);
    for (int block = 0; block < NR / 16; block++) {
        int32x4_t acc[MR][4];
        for (int r = 0; r < MR; r++) for (int q = 0; q < 4; q++) acc[r][q] = vdupq_n_s32(0);
        for (size_t g = 0; g < kgroups; g++) {
            const int8_t *bg = b + g * NR * 4 + block * 64;
            int8x16_t b0 = vld1q_s8(bg), b1 = vld1q_s8(bg + 16), b2 = vld1q_s8(bg + 32), b3 = vld1q_s8(bg + 48);
            for (int r = 0; r < MR; r++) {
                uint32_t v;
                memcpy(&v, a + r * lda + 4 * g, 4);
                int8x16_t x = vreinterpretq_s8_u8(veorq_u8(vreinterpretq_u8_u32(vdupq_n_u32(v)), flip));
                acc[r][0] = vdotq_s32(acc[r][0], b0, x);
                acc[r][1] = vdotq_s32(acc[r][1], b1, x);
                acc[r][2] = vdotq_s32(acc[r][2], b2, x);
                acc[r][3] = vdotq_s32(acc[r][3], b3, x);
            }
        }
        for (int r = 0; r < MR; r++) for (int q = 0; q < 4; q++) vst1q_s32(c + r * NR + block * 16 + q * 4, acc[r][q]);
    }
}
#endif

int d8_int8_supported(int variant) {
    switch (variant) {
    case D8_INT8_PORTABLE: return 1;
#if D8_X86
    case D8_INT8_AVX2: return __builtin_cpu_supports("avx2");
    case D8_INT8_AVX512VNNI:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
#endif
#if defined(__aarch64__)
    case D8_INT8_NEON_DOT:
#if defined(__APPLE__)
        return 1;  // every Apple arm64 CPU has the dot-product instructions
#elif defined(__linux__) && defined(HWCAP_ASIMDDP)
        return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
        return 0;
#endif
#endif
    default: return 0;
    }
}

int d8_int8_best(void) {
    static const int order[] = {D8_INT8_AVX512VNNI, D8_INT8_NEON_DOT, D8_INT8_AVX2};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) if (d8_int8_supported(order[i])) return order[i];
    return D8_INT8_PORTABLE;
}

void d8_int8_tile(int variant, const uint8_t *a, size_t lda, const int8_t *b, const int32_t *compensation,
                  size_t kgroups, int32_t *c) {
    switch (variant) {
#if D8_X86
    case D8_INT8_AVX512VNNI: tile_avx512vnni(a, lda, b, compensation, kgroups, c); return;
    case D8_INT8_AVX2: tile_avx2(a, lda, b, compensation, kgroups, c); return;
#endif
#if defined(__aarch64__)
    case D8_INT8_NEON_DOT: tile_neon_dot(a, lda, b, compensation, kgroups, c); return;
#endif
    default: tile_portable(a, lda, b, compensation, kgroups, c); return;
    }
}

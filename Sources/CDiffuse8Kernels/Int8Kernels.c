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

#if D8_X86
#pragma STDC FP_CONTRACT OFF

/// Winograd F(2×2, 3×3) in integers (`Int8Kernels.h`). Transform matrices, with G scaled by 2 so that U is integer:
///   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  2G = [2 0 0; 1 1 1; 1 -1 1; 0 0 2],  Aᵀ = [1 1 1 0; 0 1 -1 -1].
/// |V| ≤ 4 · 128 = 512, |U| ≤ 9 · 128 = 1152: both INT16; Aᵀ (Σ_c U ⊙ V) A = 4 · (the direct sum), exactly.
///
/// U of one panel, from the direct packed panel: its k group (tap · C + c) / 4 holds [NR columns][4 channels], the
/// order of U's panel, so each U block is a sum of the 9 tap blocks, lane by lane (16 lanes = 4 columns × 4 channels).
/// The 9 tap blocks of a channel group are first copied together and U's positions are `ldu` apart: at C a multiple
/// of 128 both would otherwise sit 4 KiB apart, in one L1 set.
__attribute__((target("avx2")))
static void winograd_filter_avx2(const int8_t *packed, size_t channels, int16_t *u, size_t ldu) {
    const size_t groups = channels / 4;
    int8_t taps[9][NR * 4];
    for (size_t c4 = 0; c4 < groups; c4++) {
        for (int tap = 0; tap < 9; tap++) memcpy(taps[tap], packed + (tap * groups + c4) * NR * 4, NR * 4);
        for (int s = 0; s < 8; s++) {
            __m256i g[9], t[4][3];
            for (int tap = 0; tap < 9; tap++) g[tap] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(taps[tap] + 16 * s)));
            for (int j = 0; j < 3; j++) {  // 2G · g
                const __m256i outer = _mm256_add_epi16(g[j], g[6 + j]);
                t[0][j] = _mm256_add_epi16(g[j], g[j]);
                t[1][j] = _mm256_add_epi16(outer, g[3 + j]);
                t[2][j] = _mm256_sub_epi16(outer, g[3 + j]);
                t[3][j] = _mm256_add_epi16(g[6 + j], g[6 + j]);
            }
            for (int a = 0; a < 4; a++) {  // (2G · g) · 2Gᵀ
                const __m256i outer = _mm256_add_epi16(t[a][0], t[a][2]);
                int16_t *row = u + (size_t)(a * 4) * ldu + c4 * NR * 4 + 16 * s;
                _mm256_storeu_si256((__m256i *)row, _mm256_add_epi16(t[a][0], t[a][0]));
                _mm256_storeu_si256((__m256i *)(row + ldu), _mm256_add_epi16(outer, t[a][1]));
                _mm256_storeu_si256((__m256i *)(row + 2 * ldu), _mm256_sub_epi16(outer, t[a][1]));
                _mm256_storeu_si256((__m256i *)(row + 3 * ldu), _mm256_add_epi16(t[a][2], t[a][2]));
            }
        }
    }
}

/// One 4×4 input patch per tile (rows 2ty − 1 …, columns 2tx − 1 …; code 0 outside the image) → V = Bᵀ d B, 16
/// channels at a time (one 16-byte load per patch position, widened to INT16), the last C % 16 one by one.
__attribute__((target("avx2")))
static void winograd_input_avx2(const uint8_t *codes, size_t height, size_t width, size_t channels, size_t base, size_t tile0,
                                size_t tiles, size_t tileCount, const uint8_t *zeros, int16_t *v, size_t rows, size_t ldv) {
    const size_t th = (height + 1) / 2, tw = (width + 1) / 2;
    for (size_t t = tile0; t < tile0 + tiles; t++) {
        int16_t *out[16];
        for (int x = 0; x < 16; x++) out[x] = v + ((size_t)x * rows + t - base) * ldv;
        if (t >= tileCount) {
            for (int x = 0; x < 16; x++) memset(out[x], 0, ldv * sizeof(int16_t));
            continue;
        }
        const size_t image = t / (th * tw), ty = (t / tw) % th, tx = t % tw;
        const uint8_t *d[16];
        for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) {
            const long y = (long)(2 * ty) - 1 + i, x = (long)(2 * tx) - 1 + j;
            d[i * 4 + j] = (y >= 0 && y < (long)height && x >= 0 && x < (long)width)
                ? codes + ((image * height + (size_t)y) * width + (size_t)x) * channels : zeros;
        }
        const __m128i flip = _mm_set1_epi8((char)0x80);
        size_t c = 0;
        for (; c + 16 <= channels; c += 16) {
            __m256i e[16], r[16];
            for (int i = 0; i < 16; i++) e[i] = _mm256_cvtepi8_epi16(_mm_xor_si128(_mm_loadu_si128((const __m128i *)(d[i] + c)), flip));
            for (int j = 0; j < 4; j++) {  // Bᵀ d
                r[0 * 4 + j] = _mm256_sub_epi16(e[0 * 4 + j], e[2 * 4 + j]);
                r[1 * 4 + j] = _mm256_add_epi16(e[1 * 4 + j], e[2 * 4 + j]);
                r[2 * 4 + j] = _mm256_sub_epi16(e[2 * 4 + j], e[1 * 4 + j]);
                r[3 * 4 + j] = _mm256_sub_epi16(e[1 * 4 + j], e[3 * 4 + j]);
            }
            for (int i = 0; i < 4; i++) {  // (Bᵀ d) B
                _mm256_storeu_si256((__m256i *)(out[i * 4 + 0] + c), _mm256_sub_epi16(r[i * 4 + 0], r[i * 4 + 2]));
                _mm256_storeu_si256((__m256i *)(out[i * 4 + 1] + c), _mm256_add_epi16(r[i * 4 + 1], r[i * 4 + 2]));
                _mm256_storeu_si256((__m256i *)(out[i * 4 + 2] + c), _mm256_sub_epi16(r[i * 4 + 2], r[i * 4 + 1]));
                _mm256_storeu_si256((__m256i *)(out[i * 4 + 3] + c), _mm256_sub_epi16(r[i * 4 + 1], r[i * 4 + 3]));
            }
        }
        for (; c < channels; c++) {
            int16_t e[16], r[16];
            for (int i = 0; i < 16; i++) e[i] = (int16_t)((int)d[i][c] - 128);
            for (int j = 0; j < 4; j++) {
                r[0 * 4 + j] = e[0 * 4 + j] - e[2 * 4 + j];
                r[1 * 4 + j] = e[1 * 4 + j] + e[2 * 4 + j];
                r[2 * 4 + j] = e[2 * 4 + j] - e[1 * 4 + j];
                r[3 * 4 + j] = e[1 * 4 + j] - e[3 * 4 + j];
            }
            for (int i = 0; i < 4; i++) {
                out[i * 4 + 0][c] = r[i * 4 + 0] - r[i * 4 + 2];
                out[i * 4 + 1][c] = r[i * 4 + 1] + r[i * 4 + 2];
                out[i * 4 + 2][c] = r[i * 4 + 2] - r[i * 4 + 1];
                out[i * 4 + 3][c] = r[i * 4 + 1] - r[i * 4 + 3];
            }
        }
        for (int x = 0; x < 16; x++) memset(out[x] + channels, 0, (ldv - channels) * sizeof(int16_t));
    }
}

/// The AVX2 tile on INT16 weights (Winograd's U): as `tile_avx2_widened` with plain loads for B, for the first
/// `R` (≤ MR) rows only, C stored `ldc` apart. `R` is a constant at each call, so the accumulators stay in registers.
__attribute__((target("avx2"), always_inline))
static inline void tile_avx2_int16_rows(const int16_t *wide, size_t ldw, const int16_t *b, size_t kgroups, int32_t *c,
                                        size_t ldc, const int R) {
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    for (int block = 0; block < NR / 8; block++) {
        __m256i acc[MR][2];
        for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
        const int16_t *bg = b + block * 32;
        for (size_t g = 0; g < kgroups; g++, bg += NR * 4) {
            const __m256i b0 = _mm256_loadu_si256((const __m256i *)bg);
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)(bg + 16));
            for (int r = 0; r < R; r++) {
                int64_t v;
                memcpy(&v, wide + r * ldw + 4 * g, 8);
                const __m256i x = _mm256_set1_epi64x(v);
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(x, b0));
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(x, b1));
            }
        }
        for (int r = 0; r < R; r++)
            _mm256_storeu_si256((__m256i *)(c + r * ldc + block * 8),
                                _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(acc[r][0], acc[r][1]), order));
    }
}

__attribute__((target("avx2")))
static void tile_avx2_int16(const int16_t *wide, size_t ldw, const int16_t *b, size_t kgroups, int32_t *c, size_t ldc,
                            size_t rows) {
    switch (rows) {
    case 1: tile_avx2_int16_rows(wide, ldw, b, kgroups, c, ldc, 1); return;
    case 2: tile_avx2_int16_rows(wide, ldw, b, kgroups, c, ldc, 2); return;
    case 3: tile_avx2_int16_rows(wide, ldw, b, kgroups, c, ldc, 3); return;
    case 4: tile_avx2_int16_rows(wide, ldw, b, kgroups, c, ldc, 4); return;
    case 5: tile_avx2_int16_rows(wide, ldw, b, kgroups, c, ldc, 5); return;
    default: tile_avx2_int16_rows(wide, ldw, b, kgroups, c, ldc, MR); return;
    }
}

/// Aᵀ M A for 8 outputs of one tile (vpaddd/vpsubd wrap: modular on purpose), >> 2 (exact), then the epilogue:
/// out = the tile's positions (0,0), (0,1), (1,0), (1,1), each for the 8 outputs.
__attribute__((target("avx2")))
static inline void winograd_outputs8(const int32_t *const mx[16], size_t o, __m256 ws, __m256 add, __m256 out[4]) {
    __m256i q[16], r[8];
    for (int x = 0; x < 16; x++) q[x] = _mm256_loadu_si256((const __m256i *)(mx[x] + o));
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_add_epi32(_mm256_add_epi32(q[j], q[4 + j]), q[8 + j]);
        r[4 + j] = _mm256_sub_epi32(_mm256_sub_epi32(q[4 + j], q[8 + j]), q[12 + j]);
    }
    for (int i = 0; i < 2; i++) {
        __m256i y0 = _mm256_add_epi32(_mm256_add_epi32(r[i * 4], r[i * 4 + 1]), r[i * 4 + 2]);
        __m256i y1 = _mm256_sub_epi32(_mm256_sub_epi32(r[i * 4 + 1], r[i * 4 + 2]), r[i * 4 + 3]);
        __m256 p0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(y0, 2)), ws);
        __m256 p1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(y1, 2)), ws);
        out[i * 2] = _mm256_add_ps(p0, add);
        out[i * 2 + 1] = _mm256_add_ps(p1, add);
    }
}

/// One tile's outputs from `o0` on: 8 at a time, the rest one by one (same formula), cropped to the image.
__attribute__((target("avx2")))
static void winograd_output_tile(const int32_t *const mx[16], size_t o0, size_t outputs, float sx, const float *weightScales,
                                 const float *bias, float *base, size_t plane, size_t width, int rowsValid, int columnsValid) {
    size_t o = o0;
    for (; o + 8 <= outputs; o += 8) {
        __m256 v[4];
        winograd_outputs8(mx, o, _mm256_mul_ps(_mm256_set1_ps(sx), _mm256_loadu_ps(weightScales + o)),
                          bias ? _mm256_loadu_ps(bias + o) : _mm256_setzero_ps(), v);
        float values[4][8];
        for (int x = 0; x < 4; x++) _mm256_storeu_ps(values[x], v[x]);
        for (int k = 0; k < 8; k++) {
            float *out = base + (o + k) * plane;
            for (int i = 0; i < rowsValid; i++) {
                out[i * width] = values[i * 2][k];
                if (columnsValid == 2) out[i * width + 1] = values[i * 2 + 1][k];
            }
        }
    }
    for (; o < outputs; o++) {
        int32_t q[16], r[8];
        for (int x = 0; x < 16; x++) q[x] = mx[x][o];
        for (int j = 0; j < 4; j++) {  // Aᵀ M (unsigned: modular on purpose)
            r[j] = (int32_t)((uint32_t)q[j] + (uint32_t)q[4 + j] + (uint32_t)q[8 + j]);
            r[4 + j] = (int32_t)((uint32_t)q[4 + j] - (uint32_t)q[8 + j] - (uint32_t)q[12 + j]);
        }
        const float ws = sx * weightScales[o], add = bias ? bias[o] : 0.0f;
        float *out = base + o * plane;
        for (int i = 0; i < rowsValid; i++) {
            const int32_t y0 = (int32_t)((uint32_t)r[i * 4] + (uint32_t)r[i * 4 + 1] + (uint32_t)r[i * 4 + 2]);
            const int32_t y1 = (int32_t)((uint32_t)r[i * 4 + 1] - (uint32_t)r[i * 4 + 2] - (uint32_t)r[i * 4 + 3]);
            float p0 = (float)(y0 >> 2) * ws;
            out[i * width] = p0 + add;
            if (columnsValid == 2) {
                float p1 = (float)(y1 >> 2) * ws;
                out[i * width + 1] = p1 + add;
            }
        }
    }
}

/// Y = Aᵀ M A per tile and output channel (= 4 · the direct sum, exactly: modular INT32 arithmetic, and the true value
/// fits), then the epilogue of the direct path: Float(Σ) · (s_x · s_w[o]) + bias[o], into NCHW. Two whole tiles side by
/// side are stored together: 8 outputs × their 2 × 4 values transposed in registers, one 4-float store per row.
__attribute__((target("avx2")))
static void winograd_output_avx2(const int32_t *m, size_t rows, size_t ldm, size_t base, size_t tile0, size_t tiles, size_t tileCount,
                                 size_t height, size_t width, size_t outputs, const float *imageScales,
                                 const float *weightScales, const float *bias, float *y) {
    const size_t th = (height + 1) / 2, tw = (width + 1) / 2, plane = height * width;
    const size_t end = tile0 + tiles < tileCount ? tile0 + tiles : tileCount;
    for (size_t t = tile0; t < end;) {
        const size_t image = t / (th * tw), ty = (t / tw) % th, tx = t % tw;
        const float sx = imageScales[image];
        const int32_t *mx[16], *nx[16];
        for (int x = 0; x < 16; x++) mx[x] = m + ((size_t)x * rows + t - base) * ldm;
        const int rowsValid = 2 * ty + 1 < height ? 2 : 1, columnsValid = 2 * tx + 1 < width ? 2 : 1;
        float *corner = y + (image * outputs * height + 2 * ty) * width + 2 * tx;
        if (!(rowsValid == 2 && tx + 1 < tw && 2 * tx + 3 < width && t + 1 < end)) {
            winograd_output_tile(mx, 0, outputs, sx, weightScales, bias, corner, plane, width, rowsValid, columnsValid);
            t += 1;
            continue;
        }
        for (int x = 0; x < 16; x++) nx[x] = mx[x] + ldm;
        const __m256 sxv = _mm256_set1_ps(sx);
        size_t o = 0;
        for (; o + 8 <= outputs; o += 8) {
            const __m256 ws = _mm256_mul_ps(sxv, _mm256_loadu_ps(weightScales + o));
            const __m256 add = bias ? _mm256_loadu_ps(bias + o) : _mm256_setzero_ps();
            __m256 a[4], b[4];
            winograd_outputs8(mx, o, ws, add, a);
            winograd_outputs8(nx, o, ws, add, b);
            // Rows: positions (0,0) (0,1) (0,2) (0,3) (1,0) … (1,3) of the two tiles; columns: the 8 outputs.
            __m256 t0 = _mm256_unpacklo_ps(a[0], a[1]), t1 = _mm256_unpackhi_ps(a[0], a[1]);
            __m256 t2 = _mm256_unpacklo_ps(b[0], b[1]), t3 = _mm256_unpackhi_ps(b[0], b[1]);
            __m256 t4 = _mm256_unpacklo_ps(a[2], a[3]), t5 = _mm256_unpackhi_ps(a[2], a[3]);
            __m256 t6 = _mm256_unpacklo_ps(b[2], b[3]), t7 = _mm256_unpackhi_ps(b[2], b[3]);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            __m256 c[8];
            c[0] = _mm256_permute2f128_ps(u0, u4, 0x20); c[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
            c[2] = _mm256_permute2f128_ps(u2, u6, 0x20); c[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
            c[4] = _mm256_permute2f128_ps(u0, u4, 0x31); c[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
            c[6] = _mm256_permute2f128_ps(u2, u6, 0x31); c[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
            for (int k = 0; k < 8; k++) {
                float *out = corner + (o + k) * plane;
                _mm_storeu_ps(out, _mm256_castps256_ps128(c[k]));
                _mm_storeu_ps(out + width, _mm256_extractf128_ps(c[k], 1));
            }
        }
        winograd_output_tile(mx, o, outputs, sx, weightScales, bias, corner, plane, width, 2, 2);
        winograd_output_tile(nx, o, outputs, sx, weightScales, bias, corner + 2, plane, width, 2, 2);
        t += 2;
    }
}
#endif

void d8_int8_winograd_filter(const int8_t *packed, size_t channels, int16_t *u, size_t ldu) {
#if D8_X86
    winograd_filter_avx2(packed, channels, u, ldu);
#else
    (void)packed; (void)channels; (void)u; (void)ldu;
    abort();
#endif
}

void d8_int8_winograd_input(const uint8_t *codes, size_t height, size_t width, size_t channels, size_t base, size_t tile0,
                            size_t tiles, size_t tileCount, const uint8_t *zeros, int16_t *v, size_t rows, size_t ldv) {
#if D8_X86
    winograd_input_avx2(codes, height, width, channels, base, tile0, tiles, tileCount, zeros, v, rows, ldv);
#else
    (void)codes; (void)height; (void)width; (void)channels; (void)base; (void)tile0; (void)tiles; (void)tileCount; (void)zeros;
    (void)v; (void)rows; (void)ldv;
    abort();
#endif
}

void d8_int8_winograd_multiply(const int16_t *v, size_t rows, size_t validRows, size_t ldv, const int16_t *u, size_t ldu,
                               size_t kgroups, size_t position, size_t rowTile0, size_t rowTiles, int32_t *m, size_t ldm) {
#if D8_X86
    const int16_t *a = v + position * rows * ldv;
    const int16_t *b = u + position * ldu;
    int32_t *c = m + position * rows * ldm;
    for (size_t t = rowTile0; t < rowTile0 + rowTiles && t * MR < validRows; t++) {
        const size_t valid = validRows - t * MR < MR ? validRows - t * MR : MR;
        tile_avx2_int16(a + t * MR * ldv, ldv, b, kgroups, c + t * MR * ldm, ldm, valid);
    }
#else
    (void)v; (void)rows; (void)validRows; (void)ldv; (void)u; (void)ldu; (void)kgroups; (void)position; (void)rowTile0;
    (void)rowTiles; (void)m; (void)ldm;
    abort();
#endif
}

void d8_int8_winograd_output(const int32_t *m, size_t rows, size_t ldm, size_t base, size_t tile0, size_t tiles,
                             size_t tileCount, size_t height, size_t width, size_t outputs, const float *imageScales,
                             const float *weightScales, const float *bias, float *y) {
#if D8_X86
    winograd_output_avx2(m, rows, ldm, base, tile0, tiles, tileCount, height, width, outputs, imageScales, weightScales, bias, y);
#else
    (void)m; (void)rows; (void)ldm; (void)base; (void)tile0; (void)tiles; (void)tileCount; (void)height; (void)width; (void)outputs;
    (void)imageScales; (void)weightScales; (void)bias; (void)y;
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

#if D8_X86
/// 16 × 16 bytes: rows of `src` (`lds` apart) → columns of `dst` (`ldd` apart): SSE2 unpacks of 8-, 16-, 32- and
/// 64-bit units, each round doubling the rows gathered per column.
static inline void transpose16x16(const uint8_t *src, size_t lds, uint8_t *dst, size_t ldd) {
    __m128i r[16], a[2][8], b[2][4][2], c[2][2][2][2];
    for (int i = 0; i < 16; i++) r[i] = _mm_loadu_si128((const __m128i *)(src + i * lds));
    for (int i = 0; i < 8; i++) {  // columns 0-7 / 8-15 of rows 2i, 2i+1
        a[0][i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
        a[1][i] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) for (int j = 0; j < 4; j++) {  // columns 8h + 0-3 / 4-7 of rows 4j … 4j+3
        b[h][j][0] = _mm_unpacklo_epi16(a[h][2 * j], a[h][2 * j + 1]);
        b[h][j][1] = _mm_unpackhi_epi16(a[h][2 * j], a[h][2 * j + 1]);
    }
    for (int h = 0; h < 2; h++) for (int q = 0; q < 2; q++) for (int m = 0; m < 2; m++) {  // 2 columns × rows 8m … 8m+7
        c[h][q][m][0] = _mm_unpacklo_epi32(b[h][2 * m][q], b[h][2 * m + 1][q]);
        c[h][q][m][1] = _mm_unpackhi_epi32(b[h][2 * m][q], b[h][2 * m + 1][q]);
    }
    for (int h = 0; h < 2; h++) for (int q = 0; q < 2; q++) for (int z = 0; z < 2; z++) {  // one column, all 16 rows
        const int column = 8 * h + 4 * q + 2 * z;
        _mm_storeu_si128((__m128i *)(dst + column * ldd), _mm_unpacklo_epi64(c[h][q][0][z], c[h][q][1][z]));
        _mm_storeu_si128((__m128i *)(dst + (column + 1) * ldd), _mm_unpackhi_epi64(c[h][q][0][z], c[h][q][1][z]));
    }
}
#endif

void d8_int8_channels_last(const uint8_t *planes, size_t channels, size_t spatial, size_t pixel0, size_t pixels, uint8_t *out) {
    size_t p = pixel0;
#if D8_X86
    for (; p + 16 <= pixel0 + pixels; p += 16) {
        size_t c = 0;
        for (; c + 16 <= channels; c += 16) transpose16x16(planes + c * spatial + p, spatial, out + p * channels + c, channels);
        for (; c < channels; c++) for (size_t i = 0; i < 16; i++) out[(p + i) * channels + c] = planes[c * spatial + p + i];
    }
#endif
    for (; p < pixel0 + pixels; p++) for (size_t c = 0; c < channels; c++) out[p * channels + c] = planes[c * spatial + p];
}

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

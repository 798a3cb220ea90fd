#ifndef DIFFUSE8_INT8_KERNELS_H
#define DIFFUSE8_INT8_KERNELS_H

/// INT8 GEMM micro-kernels (the only C in Diffuse8: Swift has no intrinsics for the 8-bit dot-product
/// instructions). Everything around them (packing, quantization, tiling, epilogue) is Swift.
///
/// One tile: C[r][j] = sum_k (A[r][k] - 128) * B[j][k] for D8_INT8_MR rows and D8_INT8_NR columns, as INT32.
/// - A: activation codes stored as unsigned bytes (signed code + 128), row r at a + r * lda, 4 * kgroups bytes.
/// - B: one packed weight panel, [kgroups][D8_INT8_NR][4] signed bytes (4 consecutive k of each column together).
/// - compensation: 128 * sum_k B[j][k] per column of the panel (the u8 x s8 instructions need it to turn
///   sum u * w into sum (u - 128) * w).
/// - C: D8_INT8_MR x D8_INT8_NR INT32, row-major, contiguous.
/// Sums are exact (no saturation in any variant).

#include <stddef.h>
#include <stdint.h>

#define D8_INT8_MR 6
#define D8_INT8_NR 32

/// Kernel variants, best last.
enum {
    D8_INT8_PORTABLE = 0,
    D8_INT8_AVX2 = 1,
    D8_INT8_AVX512VNNI = 2,
    D8_INT8_NEON_DOT = 3,
};

/// Whether this CPU can run `variant`.
int d8_int8_supported(int variant);

/// The best variant this CPU supports.
int d8_int8_best(void);

/// One tile with `variant` (which must be supported).
void d8_int8_tile(int variant, const uint8_t *a, size_t lda, const int8_t *b, const int32_t *compensation,
                  size_t kgroups, int32_t *c);

/// AVX2, whole products: A is widened to INT16 codes once (`d8_int8_avx2_widen`: `rows` rows, each 4 * kgroups
/// codes byte - 128, rows 4 * kgroups codes apart) instead of once per tile and weight panel (`d8_int8_tile`); each
/// tile then reads D8_INT8_MR consecutive widened rows (`d8_int8_avx2_tile_widened`). Only on x86-64 CPUs with AVX2.
void d8_int8_avx2_widen(const uint8_t *a, size_t lda, size_t rows, size_t kgroups, int16_t *wide);
void d8_int8_avx2_tile_widened(const int16_t *wide, const int8_t *b, size_t kgroups, int32_t *c);

/// AVX2, 3×3 stride-1 padding-1 convolutions by Winograd F(2×2, 3×3) in integers: 16 products per 2×2 output tile
/// and channel pair instead of 36, with the same exact sums (Aᵀ (Σ_c U ⊙ V) A = 4 · Σ (code · weight), in INT32).
/// - `d8_int8_winograd_filter`: one panel of the weight as packed for the direct kernels (`d8_int8_tile`'s B, from
///   the channels-last weight [O][3][3][C]: k = tap · C + c; C a multiple of 4) → U = 2G g 2Gᵀ of its NR outputs as
///   one INT16 panel per position ξ, u[ξ · ldu + (c / 4) · NR · 4 + column · 4 + c % 4] (ldu ≥ C · NR).
/// - `d8_int8_winograd_input`: tiles tile0 ..< tile0 + tiles of the channels-last codes + 128 [N][H][W][C] →
///   v[(ξ · rows + tile − base) · ldv + c] = (Bᵀ d B)[ξ] (v holds the tiles base ..< base + rows; ldv ≥ C, a multiple
///   of 4: zero past C; tiles past tileCount are zero rows); tile t = (image, ty, tx) with ceil(H/2) × ceil(W/2) tiles
///   per image; `zeros` holds C bytes of 128.
/// - `d8_int8_winograd_multiply`: m[(ξ · rows + r) · ldm + o] = Σ_c v · u for position ξ, the panel of NR outputs
///   in u (as made by `d8_int8_winograd_filter`; m points at its first column) and the row tiles rowTile0 ..<
///   rowTile0 + rowTiles (MR rows each; rows a multiple of MR, ldv = 4 · kgroups), rows r < validRows only (the rows
///   that hold tiles).
/// - `d8_int8_winograd_output`: per tile (m's rows as v's) and output, Σ = (Aᵀ M A) / 4 and y[image][o][h][w] =
///   Float(Σ) · (imageScales[image] · weightScales[o]) + bias[o] (bias may be NULL: + 0), cropped to H × W.
/// Exact while channels ≤ 3640 (|4 Σ| < 2³¹). Only on x86-64 CPUs with AVX2.
void d8_int8_winograd_filter(const int8_t *packed, size_t channels, int16_t *u, size_t ldu);
void d8_int8_winograd_input(const uint8_t *codes, size_t height, size_t width, size_t channels, size_t base, size_t tile0,
                            size_t tiles, size_t tileCount, const uint8_t *zeros, int16_t *v, size_t rows, size_t ldv);
void d8_int8_winograd_multiply(const int16_t *v, size_t rows, size_t validRows, size_t ldv, const int16_t *u, size_t ldu,
                               size_t kgroups, size_t position, size_t rowTile0, size_t rowTiles, int32_t *m, size_t ldm);
void d8_int8_winograd_output(const int32_t *m, size_t rows, size_t ldm, size_t base, size_t tile0, size_t tiles,
                             size_t tileCount, size_t height, size_t width, size_t outputs, const float *imageScales,
                             const float *weightScales, const float *bias, float *y);

/// Channel planes of codes [C][spatial] → channels-last [spatial][C], for the pixels pixel0 ..< pixel0 + pixels
/// (16 × 16 byte blocks transposed in registers on x86-64, plain loops elsewhere).
void d8_int8_channels_last(const uint8_t *planes, size_t channels, size_t spatial, size_t pixel0, size_t pixels, uint8_t *out);

#endif

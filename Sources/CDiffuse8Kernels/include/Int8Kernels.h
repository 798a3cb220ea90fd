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

#endif

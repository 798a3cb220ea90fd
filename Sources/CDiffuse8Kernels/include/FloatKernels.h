#ifndef DIFFUSE8_FLOAT_KERNELS_H
#define DIFFUSE8_FLOAT_KERNELS_H

/// FP32 SGEMM micro-kernels for x86-64 (AVX2+FMA, AVX-512F), compiled with per-function target attributes so one
/// binary runs on any x86-64 and uses the best instructions where it runs. The portable kernel is Swift
/// (`GemmMicroKernel`); the blocking, packing and parallel split around these kernels are Swift (`Gemm`).
///
/// Packed operands (the layout of `GemmPacking`): A as slivers of MR rows, a[s * MR * depth + p * MR + r];
/// B as slivers of NR columns, b[s * NR * depth + p * NR + j]; both zero-padded past the matrix edge.

#include <stddef.h>

/// Kernel variants, best last.
enum {
    D8_F32_PORTABLE = 0,
    D8_F32_AVX2 = 1,
    D8_F32_AVX512 = 2,
};

/// What C holds before the product is added (`GemmMicroKernel.Initial`).
enum {
    D8_F32_ZERO = 0,         ///< C = A·B
    D8_F32_ACCUMULATE = 1,   ///< C += A·B
    D8_F32_COLUMN_BIAS = 2,  ///< C = A·B + bias[j] (bias points at the block's first column)
    D8_F32_ROW_BIAS = 3,     ///< C = A·B + bias[i] (bias points at the block's first row)
};

/// Whether this CPU (and this build's architecture) can run `variant`.
int d8_f32_supported(int variant);

/// The best variant this CPU supports (D8_F32_PORTABLE where no C kernel applies).
int d8_f32_best(void);

/// Micro-tile rows (MR) and columns (NR) of a C variant (0 for D8_F32_PORTABLE).
int d8_f32_tile_rows(int variant);
int d8_f32_tile_columns(int variant);

/// C[rows × columns] (+)= packedA · packedB for one depth slice: every MR × NR tile of the block, column slivers
/// outer (the B sliver stays in L1), row slivers inner. `rows`/`columns` may end inside a sliver (the padding is
/// computed but not stored). `variant` must be a supported C variant.
void d8_f32_block(int variant, size_t rows, size_t columns, size_t depth, const float *packedA, const float *packedB,
                  float *c, size_t ldc, int initial, const float *bias);

/// Packs A(i, p) = a[i * lda + p], i < rows, p < depth, into slivers of `mr` rows (zero rows past `rows`).
void d8_f32_pack_a(size_t mr, const float *a, size_t lda, size_t rows, size_t depth, float *out);

/// Whether `d8_f32_exponentiate_row` runs here (x86-64 with AVX2 and FMA).
int d8_f32_exponentiate_row_supported(void);

/// row[i] = exp(scale · (row[i] − max)) for i < count (max: the row's maximum); returns Σ row[i]. The softmax
/// numerator of an attention score row, with the Cephes `expf` polynomial (inputs clamped to [−87.34, 88.38]).
/// Only where `d8_f32_exponentiate_row_supported()`.
float d8_f32_exponentiate_row(float *row, size_t count, float scale);

#endif

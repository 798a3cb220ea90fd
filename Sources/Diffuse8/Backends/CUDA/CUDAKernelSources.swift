/// CUDA C sources compiled by NVRTC. No headers are included (NVRTC needs none): 16-bit values travel
/// as raw `unsigned short` bits and are converted with `cvt` instructions, and all arithmetic is FP32. The same
/// source compiles for FP16 storage or, with `D8_BF16` defined, for bfloat16 (`CUDAKernels.function`).
enum CUDAKernelSources {
    /// Helpers shared by every module.
    static let prelude = #"""
typedef unsigned short half_t;
typedef unsigned int u32;
typedef long long i64;
#define D8_INFINITY __int_as_float(0x7f800000)
#define D8_ALIGN16 __attribute__((aligned(16)))
/// 16 bytes moved as one vector load/store.
struct D8_ALIGN16 vec16 { u32 x, y, z, w; };

#ifdef D8_BF16
/// Storage is bfloat16 (the module was compiled with D8_BF16): the upper half of an FP32.
#define D8_MMA_TYPE "bf16"
__device__ __forceinline__ float h2f(half_t h) { return __uint_as_float(((u32)h) << 16); }
__device__ __forceinline__ half_t f2h(float f) { half_t h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ u32 pack_half2(float lo, float hi) {
    u32 r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
}
#else
#define D8_MMA_TYPE "f16"
__device__ __forceinline__ float h2f(half_t h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ half_t f2h(float f) { half_t h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
/// Packs two floats into an f16x2 register; `lo` lands in the low 16 bits (the lower column index).
__device__ __forceinline__ u32 pack_half2(float lo, float hi) {
    u32 r; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
}
#endif

__device__ __forceinline__ void unpack2(u32 v, float& lo, float& hi) {
    lo = h2f((half_t)(v & 0xffffu)); hi = h2f((half_t)(v >> 16));
}
__device__ __forceinline__ void unpack8(const vec16& t, float* f) {
    unpack2(t.x, f[0], f[1]); unpack2(t.y, f[2], f[3]); unpack2(t.z, f[4], f[5]); unpack2(t.w, f[6], f[7]);
}
__device__ __forceinline__ i64 min64(i64 a, i64 b) { return a < b ? a : b; }
/// Programmatic dependent launch (sm_90 and later, `CUDAKernelCompiler.overlapsLaunches`): a kernel may be started
/// while the kernel before it in the stream still runs. Every kernel calls this before it touches global memory: it
/// waits until the previous kernel has finished and its writes are visible, then lets the next kernel start, whose
/// blocks then wait here in turn. Launch latency and set-up so overlap the previous kernel's last wave.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define D8_AFTER_PREVIOUS_KERNEL() asm volatile("griddepcontrol.wait;\n\tgriddepcontrol.launch_dependents;\n" ::: "memory")
#else
#define D8_AFTER_PREVIOUS_KERNEL() do {} while (0)
#endif
/// m ≥ 0 (not NaN) rounded to FP8 E4M3 "fn": saturated to 448, nearest even, subnormals on a 2^-9 grid.
__device__ __forceinline__ float e4m3_round(float m) {
    m = fminf(m, 448.f);
    if (m < 0.015625f) return rintf(m * 512.f) * 0.001953125f;
    const int e = (int)((__float_as_uint(m) >> 23) & 0xff) - 127;    // m = 1.f * 2^e
    const float quantum = __uint_as_float((u32)(e - 3 + 127) << 23);  // 2^(e-3): 3 mantissa bits
    return rintf(m * __uint_as_float((u32)(3 - e + 127) << 23)) * quantum;  // × 2^(3-e): exactly m / quantum
}
/// quantize → dequantize of v / scale, times scale, with the exact rounding of `QuantizedFormat` (the 8-bit
/// simulation). format 0: INT8, 1: FP8 E4M3.
__device__ __forceinline__ float fake_quantize(float v, float scale, int format) {
    const float a = v / scale;
    if (format == 0) {
        if (a != a) return 0.f;
        return fminf(fmaxf(rintf(a), -128.f), 127.f) * scale;
    }
    if (a != a) return a;
    return copysignf(e4m3_round(fabsf(a)), a) * scale;
}

/// 8 bytes moved as one vector load/store (eight 8-bit codes).
struct __attribute__((aligned(8))) vec8 { u32 x, y; };

/// v / scale rounded as IEEE division rounds, from r = __frcp_rn(scale): one product and one FMA correction
/// (Markstein) instead of the division's instruction sequence. Checked against division for every float v at several
/// scales: equal but for subnormal v, whose codes are 0 either way, and quotients beyond the float range, which stay
/// ±inf instead of ±FLT_MAX (the same saturated code).
__device__ __forceinline__ float divide_by_scale(float v, float scale, float r) {
    const float q = v * r;
    const float c = fmaf(fmaf(-q, scale, v), r, q);
    return c == c ? c : q;
}

/// The 8-bit code of a = v / scale, rounded as `fake_quantize` rounds: INT8 two's complement, FP8 E4M3 "fn" bits.
__device__ __forceinline__ u32 code_of_quotient(float a, int format) {
    if (format == 0) return (u32)min(max(__float2int_rn(a), -128), 127) & 0xffu;  // NaN → 0
#if __CUDA_ARCH__ >= 890
    // The hardware conversion rounds exactly as below (nearest even, saturated to ±448, NaN → 0x7f).
    unsigned short pair;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(0.f), "f"(a));
    return pair & 0xffu;
#endif
    if (a != a) return 0x7fu;
    const float q = e4m3_round(fabsf(a));
    u32 bits;
    if (q < 0.015625f) {
        bits = (u32)(q * 512.f);                                     // subnormals 0..7; 8 is the smallest normal
    } else {
        const u32 b = __float_as_uint(q);
        bits = ((((b >> 23) & 0xffu) - 120u) << 3) | ((b >> 20) & 7u);  // biased exponent e + 7, 3 mantissa bits
    }
    return a < 0.f ? bits | 0x80u : bits;
}

/// The 8-bit code of v / scale.
__device__ __forceinline__ u32 quantize_code(float v, float scale, int format) {
    return code_of_quotient(divide_by_scale(v, scale, __frcp_rn(scale)), format);
}

__device__ __forceinline__ float decode_code(u32 c, int format) {
    if (format == 0) return (float)(signed char)c;
    const u32 e = (c >> 3) & 15u, m = c & 7u;
    if (e == 15u && m == 7u) return __int_as_float(0x7fc00000);
    const float v = e == 0u ? (float)m * 0.001953125f : __uint_as_float(((e + 120u) << 23) | (m << 20));
    return (c & 0x80u) ? -v : v;
}

/// The codes of two quotients c0, c1 (value / scale) in the low half-word, c0 in the low byte, with `high`'s low half
/// above, as `code_of_quotient` rounds them (nearest even; INT8 saturated to [-128, 127], NaN → 0; E4M3 to ±448,
/// NaN → 0x7f): one conversion instruction per pair where the card has one (`F2IP.S8`, whose third operand is
/// `high`; `F2FP`) instead of a conversion, a clamp and a shift per code.
__device__ __forceinline__ u32 codes_of_quotients2(float c0, float c1, u32 high, int format) {
#if __CUDA_ARCH__ >= 890
    if (format != 0) {  // the first operand goes to the high byte
        unsigned short pair;
        asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(c1), "f"(c0));
        return (u32)pair | (high << 16);
    }
#endif
#if __CUDA_ARCH__ >= 720
    if (format == 0) {  // cvt.pack puts its first operand in byte 1, its second in byte 0, its third's low half above
        int i0, i1;
        u32 word;
        asm("cvt.rni.s32.f32 %0, %1;" : "=r"(i0) : "f"(c0));
        asm("cvt.rni.s32.f32 %0, %1;" : "=r"(i1) : "f"(c1));
        asm("cvt.pack.sat.s8.s32.b32 %0, %1, %2, %3;" : "=r"(word) : "r"(i1), "r"(i0), "r"(high));
        return word;
    }
#endif
    return code_of_quotient(c0, format) | (code_of_quotient(c1, format) << 8) | (high << 16);
}

/// The codes of four quotients a[0..3] in one word, a[0] in the low byte.
__device__ __forceinline__ u32 codes_of_quotients4(const float* a, int format) {
    return codes_of_quotients2(a[0], a[1], codes_of_quotients2(a[2], a[3], 0, format), format);
}

/// Eight values → eight 8-bit codes of (v ⊙ s) / scale (s: SmoothQuant factors of these columns, may be null).
__device__ __forceinline__ vec8 quantize8(const float* v, const float* s, float scale, int format) {
    const float r = __frcp_rn(scale);
    float a[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) a[e] = divide_by_scale(s ? v[e] * s[e] : v[e], scale, r);
    vec8 o;
    o.x = codes_of_quotients4(a, format);
    o.y = codes_of_quotients4(a + 4, format);
    return o;
}

/// 2^x with the MUFU instruction (ftz; inputs here are ≤ 0 after the max is subtracted, -inf gives 0).
__device__ __forceinline__ float fast_exp2(float x) { float y; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/// Sum over the block; `scratch` holds 32 floats. Every thread gets the result.
__device__ float block_sum(float v, float* scratch) {
    v = warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : 0.f;
        v = warp_sum(v);
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    return scratch[0];
}
__device__ float block_max(float v, float* scratch) {
    v = warp_max(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : -D8_INFINITY;
        v = warp_max(v);
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    return scratch[0];
}
__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_tanh(float x) {
    return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }
"""#

    /// Normalisation, activations, element-wise and layout kernels (module "diffuse8_basic").
    static let basic = prelude + #"""

// Keeps the stream busy for `ns` nanoseconds (one thread), so that work the host queues meanwhile then runs back to
// back, as in a CUDA graph: timing events around that work measure the device alone (`CUDAKernels.holdStream`).
extern "C" __global__ void hold_stream(long long ns) {
    D8_AFTER_PREVIOUS_KERNEL();
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(start));
    do {
        __nanosleep(1000);
        asm volatile("mov.u64 %0, %globaltimer;" : "=l"(now));
    } while ((long long)(now - start) < ns);
}

// GroupNorm on NCHW: one block per (image, group); two passes for the statistics (mean, then the
// centred variance, like torch), a third to write. Optional fused SiLU.
extern "C" __global__ void group_norm_nchw(const half_t* __restrict__ x, const half_t* __restrict__ gamma,
        const half_t* __restrict__ beta, half_t* __restrict__ y, int C, int HW, int groups, float eps, int fuse_silu) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ float scratch[32];
    const int ng = blockIdx.x, g = ng % groups, cpg = C / groups;
    const i64 base = (i64)ng * cpg * HW, len = (i64)cpg * HW;
    const half_t* xp = x + base;
    float s = 0.f;
    for (i64 i = threadIdx.x; i < len; i += blockDim.x) s += h2f(xp[i]);
    const float mean = block_sum(s, scratch) / (float)len;
    float v = 0.f;
    for (i64 i = threadIdx.x; i < len; i += blockDim.x) { float d = h2f(xp[i]) - mean; v += d * d; }
    const float inv = rsqrtf(block_sum(v, scratch) / (float)len + eps);
    for (i64 i = threadIdx.x; i < len; i += blockDim.x) {
        const int c = g * cpg + (int)(i / HW);
        float r = (h2f(xp[i]) - mean) * inv * h2f(gamma[c]) + h2f(beta[c]);
        if (fuse_silu) r = silu(r);
        y[base + i] = f2h(r);
    }
}

// Adds the moments (nb values, mean mb, centred sum of squares m2b) into (n, mean, m2): Chan et al.'s pairwise update.
__device__ __forceinline__ void merge_moments(float& n, float& mean, float& m2, float nb, float mb, float m2b) {
    const float total = n + nb;
    if (total == 0.f) return;
    const float delta = mb - mean, w = nb / total;
    mean += delta * w;
    m2 += m2b + delta * delta * n * w;
    n = total;
}

// The block's moments merged from every thread's; thread 0 gets the result. `scratch` holds 96 floats.
__device__ void block_merge_moments(float& n, float& mean, float& m2, float* scratch) {
    for (int o = 16; o > 0; o >>= 1)
        merge_moments(n, mean, m2, __shfl_xor_sync(0xffffffffu, n, o), __shfl_xor_sync(0xffffffffu, mean, o),
                      __shfl_xor_sync(0xffffffffu, m2, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    if (lane == 0) { scratch[warp] = n; scratch[32 + warp] = mean; scratch[64 + warp] = m2; }
    __syncthreads();
    if (warp == 0) {
        n = lane < warps ? scratch[lane] : 0.f;
        mean = lane < warps ? scratch[32 + lane] : 0.f;
        m2 = lane < warps ? scratch[64 + lane] : 0.f;
        for (int o = 16; o > 0; o >>= 1)
            merge_moments(n, mean, m2, __shfl_xor_sync(0xffffffffu, n, o), __shfl_xor_sync(0xffffffffu, mean, o),
                          __shfl_xor_sync(0xffffffffu, m2, o));
    }
}

// Split GroupNorm for large groups, pass 1: block (chunk, image*group) computes the mean and the centred sum of
// squares (M2) of its chunk of the group into partial[..] = (mean, M2), reading the chunk once. Each thread sums its
// values less the first one it reads (d = v − ref: Σd, Σd²; no division per value) and turns them into its mean and
// M2 = Σd² − (Σd)²/n, which does not cancel while ref is one of the values; the threads' moments, and in pass 2 the
// chunks', are merged with Chan's formula, so no E[x²] − E[x]² cancellation over the group. With 8-value vectors, a
// thread's loads go out four at a time (the last ones predicated) and ref is taken from the first of them, so that it
// waits on memory once per batch.
extern "C" __global__ void group_norm_stats(const half_t* __restrict__ x, float* __restrict__ partial,
        i64 group_len, int chunk_len) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ float scratch[96];
    const int chunk = blockIdx.x, chunks = gridDim.x, ng = blockIdx.y;
    const i64 start = (i64)chunk * chunk_len;
    const int len = (int)min64((i64)chunk_len, group_len - start);
    const half_t* xp = x + (i64)ng * group_len + start;
    const bool vector = ((group_len | chunk_len) & 7) == 0;
    const int first = vector ? threadIdx.x * 8 : threadIdx.x, step = vector ? blockDim.x * 8 : blockDim.x;
    float ref = 0.f, s1 = 0.f, s2 = 0.f;
    if (vector) {
        for (int i = first; i < len; i += 4 * step) {
            vec16 v[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) v[k] = i + k * step < len ? *(const vec16*)(xp + i + k * step) : vec16{0u, 0u, 0u, 0u};
            if (i == first) ref = h2f((half_t)(v[0].x & 0xffffu));
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                if (i + k * step >= len) break;
                float f[8];
                unpack8(v[k], f);
#pragma unroll
                for (int e = 0; e < 8; ++e) { const float d = f[e] - ref; s1 += d; s2 = fmaf(d, d, s2); }
            }
        }
    } else {
        if (first < len) ref = h2f(xp[first]);
        for (int i = first; i < len; i += step) { const float d = h2f(xp[i]) - ref; s1 += d; s2 = fmaf(d, d, s2); }
    }
    float n = first < len ? (float)((len - first + step - 1) / step * (vector ? 8 : 1)) : 0.f;
    float mean = n > 0.f ? ref + s1 / n : 0.f, m2 = n > 0.f ? fmaxf(s2 - s1 * (s1 / n), 0.f) : 0.f;
    block_merge_moments(n, mean, m2, scratch);
    if (threadIdx.x == 0) { partial[2 * ((i64)ng * chunks + chunk)] = mean; partial[2 * ((i64)ng * chunks + chunk) + 1] = m2; }
}

// Group ng's mean and variance from its chunks' (mean, M2) in `partial` (pass 1: chunks of chunk_len values, the
// last one shorter), merged in double (Chan et al.'s pairwise update).
__device__ __forceinline__ void merge_group_statistics(const float* __restrict__ partial, i64 ng, int chunks, int chunk_len,
        i64 group_len, double& mean, double& variance) {
    double n = 0.0, m2 = 0.0;
    mean = 0.0;
    for (int c = 0; c < chunks; ++c) {
        const double nb = (double)min64((i64)chunk_len, group_len - (i64)c * chunk_len);
        const double mb = partial[2 * (ng * chunks + c)], m2b = partial[2 * (ng * chunks + c) + 1];
        const double total = n + nb, delta = mb - mean;
        mean += delta * nb / total;
        m2 += m2b + delta * delta * n * nb / total;
        n = total;
    }
    variance = m2 / n;
}

// Split GroupNorm, pass 2: merges the group's chunk statistics (thread 0, in double) and normalises this block's
// chunk, 8 values per 16-byte access when the sizes allow. Optional fused SiLU.
extern "C" __global__ void group_norm_apply(const half_t* __restrict__ x, const float* __restrict__ partial,
        const half_t* __restrict__ gamma, const half_t* __restrict__ beta, half_t* __restrict__ y,
        int C, int HW, int groups, i64 group_len, int chunk_len, float eps, int fuse_silu) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ float stats[2];
    const int chunk = blockIdx.x, chunks = gridDim.x, ng = blockIdx.y, g = ng % groups, cpg = C / groups;
    if (threadIdx.x == 0) {
        double mean, variance;
        merge_group_statistics(partial, ng, chunks, chunk_len, group_len, mean, variance);
        stats[0] = (float)mean;
        stats[1] = rsqrtf((float)variance + eps);
    }
    __syncthreads();
    const float mean = stats[0], inv = stats[1];
    const i64 start = (i64)chunk * chunk_len;
    const int len = (int)min64((i64)chunk_len, group_len - start);
    const i64 base = (i64)ng * group_len + start;
    if (((group_len | chunk_len | HW) & 7) == 0) {
        for (int i = threadIdx.x * 8; i < len; i += blockDim.x * 8) {
            const int c = g * cpg + (int)((start + i) / HW);       // 8 values share a channel (HW % 8 == 0)
            const float scale = inv * h2f(gamma[c]), shift = h2f(beta[c]) - mean * scale;
            const vec16 v = *(const vec16*)(x + base + i);
            u32 w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float a = h2f((half_t)(w[e] & 0xffffu)) * scale + shift, b = h2f((half_t)(w[e] >> 16)) * scale + shift;
                if (fuse_silu) { a = silu(a); b = silu(b); }
                w[e] = pack_half2(a, b);
            }
            vec16 r; r.x = w[0]; r.y = w[1]; r.z = w[2]; r.w = w[3];
            *(vec16*)(y + base + i) = r;
        }
    } else {
        for (int i = threadIdx.x; i < len; i += blockDim.x) {
            const int c = g * cpg + (int)((start + i) / HW);
            float r = (h2f(x[base + i]) - mean) * inv * h2f(gamma[c]) + h2f(beta[c]);
            if (fuse_silu) r = silu(r);
            y[base + i] = f2h(r);
        }
    }
}

// Split GroupNorm for a reader that is an 8-bit layer, pass 2: each (image, channel)'s scale and shift,
// affine[image, c] = (inv·γ[c], β[c] − mean·inv·γ[c]), from its group's chunk statistics merged as group_norm_apply
// merges them (once per channel here, not in every block of pass 3). A Linear reader's SmoothQuant factors (factors,
// may be null; no SiLU then) multiply both.
extern "C" __global__ void group_norm_affine(const float* __restrict__ partial, const half_t* __restrict__ gamma,
        const half_t* __restrict__ beta, const float* __restrict__ factors, float* __restrict__ affine, int images,
        int C, int groups, i64 group_len, int chunks, int chunk_len, float eps) {
    D8_AFTER_PREVIOUS_KERNEL();
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= images * C) return;
    const int c = i % C;
    const i64 ng = (i64)(i / C) * groups + c / (C / groups);
    double mean, variance;
    merge_group_statistics(partial, ng, chunks, chunk_len, group_len, mean, variance);
    const float s = rsqrtf((float)variance + eps) * h2f(gamma[c]), f = factors ? factors[c] : 1.f;
    affine[2 * i] = s * f;
    affine[2 * i + 1] = (h2f(beta[c]) - (float)mean * s) * f;
}

// Pass 3: the normalised (and SiLU'd) values as the reader's channels-last input codes, codes[b, p, c] =
// code(y[b, c, p] / scale), rounded from FP32 (no 16-bit result, no quantize pass of the reader's own). Block
// (64 pixels, 64 channels, image): each thread loads a pair of pixels from 8 channels, all 8 loads issued before the
// first is used (one at a time, each thread waited on memory's latency), the tile transposed through shared memory,
// four channels' codes written per thread (C a multiple of 4).
extern "C" __global__ void group_norm_codes_channels_last(const half_t* __restrict__ x, const float* __restrict__ affine,
        unsigned char* __restrict__ codes, int C, int P, int fuse_silu, float scale, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ float tile[64][65];
    __shared__ float ab[64][2];
    const int image = blockIdx.z, p0 = blockIdx.x * 64, c0 = blockIdx.y * 64;
    const int t = threadIdx.y * 32 + threadIdx.x;
    const i64 offset = (i64)image * C * P;
    const int p = p0 + 2 * threadIdx.x;
    u32 pairs[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const int j = threadIdx.y + 8 * k;
        const half_t* row = x + offset + (i64)(c0 + j) * P;
        pairs[k] = 0u;
        if (c0 + j < C) {
            if ((P & 1) == 0) {
                if (p < P) pairs[k] = *(const u32*)(row + p);
            } else {
                if (p < P) pairs[k] = row[p];
                if (p + 1 < P) pairs[k] |= (u32)row[p + 1] << 16;
            }
        }
    }
    if (t < 64 && c0 + t < C) {
        ab[t][0] = affine[2 * ((i64)image * C + c0 + t)];
        ab[t][1] = affine[2 * ((i64)image * C + c0 + t) + 1];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const int j = threadIdx.y + 8 * k;
        if (c0 + j >= C) continue;
        float v[2];
        unpack2(pairs[k], v[0], v[1]);
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const float r = v[e] * ab[j][0] + ab[j][1];
            tile[j][2 * threadIdx.x + e] = fuse_silu ? silu(r) : r;
        }
    }
    __syncthreads();
    const int q = t & 15, c = c0 + 4 * q;
    const float inverse = __frcp_rn(scale);
    for (int r = t >> 4; r < 64; r += 16) {
        if (p0 + r >= P || c >= C) continue;
        float a[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) a[e] = divide_by_scale(tile[4 * q + e][r], scale, inverse);
        *(u32*)(codes + offset + (i64)(p0 + r) * C + c) = codes_of_quotients4(a, format);
    }
}

// LayerNorm over the last dimension D: one block per row.
extern "C" __global__ void layer_norm(const half_t* __restrict__ x, const half_t* __restrict__ gamma,
        const half_t* __restrict__ beta, half_t* __restrict__ y, int D, float eps) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ float scratch[32];
    const half_t* xp = x + (i64)blockIdx.x * D;
    half_t* yp = y + (i64)blockIdx.x * D;
    float s = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) s += h2f(xp[i]);
    const float mean = block_sum(s, scratch) / (float)D;
    float v = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) { float d = h2f(xp[i]) - mean; v += d * d; }
    const float inv = rsqrtf(block_sum(v, scratch) / (float)D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x) yp[i] = f2h((h2f(xp[i]) - mean) * inv * h2f(gamma[i]) + h2f(beta[i]));
}

// Softmax over the last dimension D: one block per row.
extern "C" __global__ void softmax_rows(const half_t* __restrict__ x, half_t* __restrict__ y, int D) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ float scratch[32];
    const half_t* xp = x + (i64)blockIdx.x * D;
    half_t* yp = y + (i64)blockIdx.x * D;
    float m = -D8_INFINITY;
    for (int i = threadIdx.x; i < D; i += blockDim.x) m = fmaxf(m, h2f(xp[i]));
    m = block_max(m, scratch);
    float s = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) s += expf(h2f(xp[i]) - m);
    const float inv = 1.f / block_sum(s, scratch);
    for (int i = threadIdx.x; i < D; i += blockDim.x) yp[i] = f2h(expf(h2f(xp[i]) - m) * inv);
}

// Unary maps. op: 0 SiLU, 1 GELU (erf), 2 GELU (tanh), 3 quick GELU, 4 multiply by `scalar`.
extern "C" __global__ void unary(const half_t* __restrict__ x, half_t* __restrict__ y, i64 n, int op, float scalar) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const float v = h2f(x[i]);
        float r;
        switch (op) {
            case 0: r = silu(v); break;
            case 1: r = gelu_erf(v); break;
            case 2: r = gelu_tanh(v); break;
            case 3: r = v / (1.f + expf(-1.702f * v)); break;
            default: r = v * scalar; break;
        }
        y[i] = f2h(r);
    }
}

extern "C" __global__ void add(const half_t* __restrict__ a, const half_t* __restrict__ b, half_t* __restrict__ y, i64 n) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        y[i] = f2h(h2f(a[i]) + h2f(b[i]));
}

// y[n, c, :] = x[n, c, :] + v[n*C + c] (per_image = 1) or + v[c] (per_image = 0: a conv bias).
extern "C" __global__ void add_channel_bias(const half_t* __restrict__ x, const half_t* __restrict__ v,
        half_t* __restrict__ y, i64 n, int C, int HW, int per_image) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const i64 nc = i / HW;
        y[i] = f2h(h2f(x[i]) + h2f(v[per_image ? nc : nc % C]));
    }
}

// diffusers' GEGLU tail: x [rows, 2d] -> a * gelu(b) with a = x[:, :d], b = x[:, d:] (exact GELU).
extern "C" __global__ void geglu(const half_t* __restrict__ x, half_t* __restrict__ y, i64 rows, int d) {
    D8_AFTER_PREVIOUS_KERNEL();
    const i64 n = rows * d;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const i64 r = i / d; const int c = (int)(i - r * d);
        const float a = h2f(x[r * 2 * d + c]), b = h2f(x[r * 2 * d + d + c]);
        y[i] = f2h(a * gelu_erf(b));
    }
}

// Nearest 2x upsampling of NCHW (F.interpolate(scale_factor=2, mode="nearest")).
extern "C" __global__ void upsample_nearest2x(const half_t* __restrict__ x, half_t* __restrict__ y, i64 n, int H, int W) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const int ox = (int)(i % (2 * W)); const i64 t = i / (2 * W);
        const int oy = (int)(t % (2 * H)); const i64 nc = t / (2 * H);
        y[i] = x[(nc * H + oy / 2) * W + ox / 2];
    }
}

// upsample_nearest2x for W % 4 == 0: each thread reads four halves of input row r (8 bytes) and writes each twice,
// 16 bytes to output rows 2r and 2r + 1 (row nc·H + iy becomes rows nc·2H + 2iy and the next), one division per four
// inputs where the element form takes two 64-bit divisions per output.
extern "C" __global__ void upsample_nearest2x_vec4(const half_t* __restrict__ x, half_t* __restrict__ y, i64 quads, int W) {
    D8_AFTER_PREVIOUS_KERNEL();
    const int quadsPerRow = W / 4;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < quads; i += (i64)gridDim.x * blockDim.x) {
        const i64 r = i / quadsPerRow; const int q = (int)(i - r * quadsPerRow);
        const uint2 v = *reinterpret_cast<const uint2*>(x + i * 4);
        const uint4 o = make_uint4(__byte_perm(v.x, 0, 0x1010), __byte_perm(v.x, 0, 0x3232),
                                   __byte_perm(v.y, 0, 0x1010), __byte_perm(v.y, 0, 0x3232));
        uint4* row = reinterpret_cast<uint4*>(y + 2 * r * (2 * (i64)W) + 8 * q);
        row[0] = o;
        row[W / 4] = o;   // the next output row, 2W halves = W/4 uint4 further
    }
}

// NCHW channel concatenation of two tensors, 16 bytes per access: image blockIdx.y of y holds that image's planes of
// a (a_vectors 16-byte vectors), then of b (b_vectors). One launch for every image (device copies take one per image
// and part).
extern "C" __global__ void concat_channels_vec8(const vec16* __restrict__ a, const vec16* __restrict__ b, vec16* __restrict__ y,
        int a_vectors, int b_vectors) {
    D8_AFTER_PREVIOUS_KERNEL();
    const int total = a_vectors + b_vectors;
    const i64 image = blockIdx.y;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x)
        y[image * total + i] = i < a_vectors ? a[image * a_vectors + i] : b[image * b_vectors + (i - a_vectors)];
}

// Batched transpose: x [B, R, C] -> y [B, C, R], through a 32x33 shared tile. Block (32, 8).
extern "C" __global__ void transpose_batched(const half_t* __restrict__ x, half_t* __restrict__ y, int R, int C) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ half_t tile[32][33];
    const i64 offset = (i64)blockIdx.z * R * C;
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int j = threadIdx.y; j < 32; j += 8) {
        const int r = r0 + j, c = c0 + threadIdx.x;
        if (r < R && c < C) tile[j][threadIdx.x] = x[offset + (i64)r * C + c];
    }
    __syncthreads();
    for (int j = threadIdx.y; j < 32; j += 8) {
        const int c = c0 + j, r = r0 + threadIdx.x;
        if (c < C && r < R) y[offset + (i64)c * R + r] = tile[threadIdx.x][j];
    }
}

// im2col for NCHW: cols[n][(c*kh + ky)*kw + kx][oy*OW + ox], zero outside the image.
extern "C" __global__ void im2col(const half_t* __restrict__ x, half_t* __restrict__ cols, i64 total,
        int C, int H, int W, int kh, int kw, int stride, int pad, int OH, int OW) {
    D8_AFTER_PREVIOUS_KERNEL();
    const int P = OH * OW, CK = C * kh * kw;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
        const int p = (int)(i % P); const i64 t = i / P;
        const int ck = (int)(t % CK); const int n = (int)(t / CK);
        const int kx = ck % kw, ky = (ck / kw) % kh, c = ck / (kw * kh);
        const int iy = (p / OW) * stride - pad + ky, ix = (p % OW) * stride - pad + kx;
        cols[i] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[(((i64)n * C + c) * H + iy) * W + ix] : (half_t)0;
    }
}
"""#
}

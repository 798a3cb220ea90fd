/// Fused element-wise kernels the FP16 UNet (`CUDAUNet`) uses to save passes over its feature maps:
/// conv bias + time embedding, conv bias + residual (+ output scale), tokens → NCHW + residual.
/// Each is the composition of `CUDAKernels` operations named in its doc comment, in FP32 arithmetic.
extension CUDAKernels {
    static let fusedSource = CUDAKernelSources.prelude + #"""


// GEGLU with 16-byte accesses: x [rows, 2d] -> y [rows, d] = a * gelu_erf(gate), 8 outputs per thread; d % 8 == 0.
// With `codes` set, the result goes straight to an 8-bit layer instead: codes = code(y ⊙ smoothing / scale), y unused.
extern "C" __global__ void geglu_vec8(const half_t* __restrict__ x, half_t* __restrict__ y, i64 rows, int d,
        const float* __restrict__ smoothing, vec8* __restrict__ codes, float scale, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    const int groups = d / 8;
    const i64 n = rows * groups;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const i64 r = i / groups; const int c = (int)(i - r * groups) * 8;
        float a[8], g[8];
        unpack8(*(const vec16*)(x + r * 2 * d + c), a);
        unpack8(*(const vec16*)(x + r * 2 * d + d + c), g);
        if (codes) {
#pragma unroll
            for (int e = 0; e < 8; ++e) a[e] *= gelu_erf(g[e]);
            codes[(r * d + c) / 8] = quantize8(a, smoothing ? smoothing + c : 0, scale, format);
            continue;
        }
        vec16 o;
        o.x = pack_half2(a[0] * gelu_erf(g[0]), a[1] * gelu_erf(g[1]));
        o.y = pack_half2(a[2] * gelu_erf(g[2]), a[3] * gelu_erf(g[3]));
        o.z = pack_half2(a[4] * gelu_erf(g[4]), a[5] * gelu_erf(g[5]));
        o.w = pack_half2(a[6] * gelu_erf(g[6]), a[7] * gelu_erf(g[7]));
        *(vec16*)(y + r * d + c) = o;
    }
}

// LayerNorm with one warp per row, the row held in registers (16-byte loads, read once, two-pass variance), K
// 16-byte chunks per lane: D % 8 == 0 and D <= 256 K. With `codes` set, the result goes straight to an 8-bit layer
// instead: codes = code(y ⊙ smoothing / scale), y unused. The per-column operands (γ, β; for codes, γ·m and β·m with
// m = factor / scale, folded once per layer by `layer_norm_code_affine`, so that a value's quotient is one FMA,
// (x - mean)·inv·(γm) + βm, within a few ulp of y·factor / scale, as the GEMM epilogue's codes) are copied into shared
// memory by the block's threads (`layer_norm_stage`, before the kernel waits for its predecessor: no kernel writes
// them) while the rows load, so they are at hand after the reductions; loaded then, from L2, they were a second round
// trip after the first, and folded in every block, they made the code-writing LayerNorm slower than the 16-bit one.
__device__ __forceinline__ void copy16_to_shared(void* shared, const void* global) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" :: "r"((u32)__cvta_generic_to_shared(shared)), "l"(global));
}
__device__ __forceinline__ void layer_norm_stage(half_t* gamma_s, half_t* beta_s, float* gain_s, float* shift_s,
        const half_t* __restrict__ gamma, const half_t* __restrict__ beta, const float* __restrict__ affine, int D) {
    if (affine) {
        for (int i = threadIdx.x; i < D / 4; i += blockDim.x) {
            copy16_to_shared(gain_s + 4 * i, affine + 4 * i);
            copy16_to_shared(shift_s + 4 * i, affine + D + 4 * i);
        }
    } else {
        for (int i = threadIdx.x; i < D / 8; i += blockDim.x) {
            copy16_to_shared(gamma_s + 8 * i, gamma + 8 * i);
            copy16_to_shared(beta_s + 8 * i, beta + 8 * i);
        }
    }
    asm volatile("cp.async.commit_group;");
}
// The code-writing LayerNorm's operands for one reader: affine[c] = γ[c]·m, affine[D + c] = β[c]·m, m = factor[c] / scale
// (factor 1 without SmoothQuant factors; the reciprocal of the scale correctly rounded, then one product each).
extern "C" __global__ void layer_norm_code_affine(const half_t* __restrict__ gamma, const half_t* __restrict__ beta,
        const float* __restrict__ smoothing, float scale, float* __restrict__ affine, int D) {
    D8_AFTER_PREVIOUS_KERNEL();
    const float r = __frcp_rn(scale);
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < D; c += gridDim.x * blockDim.x) {
        const float m = smoothing ? smoothing[c] * r : r;
        affine[c] = h2f(gamma[c]) * m;
        affine[D + c] = h2f(beta[c]) * m;
    }
}
template <int K>
__device__ __forceinline__ void layer_norm_rows(const half_t* __restrict__ x, const half_t* gamma_s, const half_t* beta_s,
        half_t* __restrict__ y, i64 rows, int D, float eps, const float* gain_s, const float* shift_s, vec8* __restrict__ codes,
        int format) {
    const int vecs = D / 8;
    const int lane = threadIdx.x & 31;
    const i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const bool valid = row < rows;   // every warp reaches the barrier below
    const half_t* xp = x + row * D;
    half_t* yp = y + row * D;
    float v[K][8];
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int j = lane + k * 32;
        if (valid && j < vecs) {
            unpack8(*(const vec16*)(xp + j * 8), v[k]);
#pragma unroll
            for (int e = 0; e < 8; ++e) s += v[k][e];
        }
    }
    const float mean = warp_sum(s) / (float)D;
    float q = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        if (valid && lane + k * 32 < vecs) {
#pragma unroll
            for (int e = 0; e < 8; ++e) { const float t = v[k][e] - mean; q += t * t; }
        }
    }
    const float inv = rsqrtf(warp_sum(q) / (float)D + eps);
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    __syncthreads();
    if (!valid) return;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        const int j = lane + k * 32;
        if (j < vecs) {
            if (codes) {
                float a[8];
                const float4* gm = (const float4*)(gain_s + j * 8);
                const float4* bm = (const float4*)(shift_s + j * 8);
                const float4 g0 = gm[0], g1 = gm[1], b0 = bm[0], b1 = bm[1];
                const float g[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w};
                const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
                for (int e = 0; e < 8; ++e) a[e] = fmaf((v[k][e] - mean) * inv, g[e], b[e]);
                vec8 o;
                o.x = codes_of_quotients4(a, format);
                o.y = codes_of_quotients4(a + 4, format);
                codes[(row * D + j * 8) / 8] = o;
                continue;
            }
            float g[8], b[8];
            unpack8(*(const vec16*)(gamma_s + j * 8), g);
            unpack8(*(const vec16*)(beta_s + j * 8), b);
            vec16 o;
            o.x = pack_half2((v[k][0] - mean) * inv * g[0] + b[0], (v[k][1] - mean) * inv * g[1] + b[1]);
            o.y = pack_half2((v[k][2] - mean) * inv * g[2] + b[2], (v[k][3] - mean) * inv * g[3] + b[3]);
            o.z = pack_half2((v[k][4] - mean) * inv * g[4] + b[4], (v[k][5] - mean) * inv * g[5] + b[5]);
            o.w = pack_half2((v[k][6] - mean) * inv * g[6] + b[6], (v[k][7] - mean) * inv * g[7] + b[7]);
            *(vec16*)(yp + j * 8) = o;
        }
    }
}

// y[n,c,:] = x[n,c,:] + v[n * v_stride + c]  (v: per-image rows, e.g. one slice of all resnets' time projections).
extern "C" __global__ void add_channel_vector(const half_t* __restrict__ x, const half_t* __restrict__ v,
        half_t* __restrict__ y, i64 n, int C, int HW, int v_stride) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const i64 nc = i / HW;
        const int image = (int)(nc / C), c = (int)(nc % C);
        y[i] = f2h(h2f(x[i]) + h2f(v[(i64)image * v_stride + c]));
    }
}

// y = (r + x + bias[c]) * scale on NCHW.
extern "C" __global__ void bias_residual(const half_t* __restrict__ x, const half_t* __restrict__ bias,
        const half_t* __restrict__ r, half_t* __restrict__ y, i64 n, int C, int HW, float scale) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const int c = (int)((i / HW) % C);
        y[i] = f2h((h2f(r[i]) + (h2f(x[i]) + h2f(bias[c]))) * scale);
    }
}

// y[b, c, p] from tokens t[b, p, c] [B, R=HW, C] (an 8-bit convolution's channels-last output) in the pass that
// transposes them back to NCHW, with what follows it: mode 0, t + v[b · v_stride + c] (a resnet's time embedding, as
// add_channel_vector adds it); mode 1, (r + (t + bias[c])) · scale (a resnet's output, as bias_residual makes it), or
// without a bias r + t, times scale only where scale ≠ 1 (as add, then scale).
extern "C" __global__ void tokens_to_channels_epilogue(const half_t* __restrict__ t, const half_t* __restrict__ v, int v_stride,
        const half_t* __restrict__ bias, const half_t* __restrict__ r, half_t* __restrict__ y, int R, int C, float scale, int mode) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ half_t tile[32][33];
    const i64 offset = (i64)blockIdx.z * R * C;
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    half_t in[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const int row = r0 + threadIdx.y + 8 * k, c = c0 + threadIdx.x;
        in[k] = row < R && c < C ? t[offset + (i64)row * C + c] : (half_t)0;
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) tile[threadIdx.y + 8 * k][threadIdx.x] = in[k];
    __syncthreads();
    // Each position's residual and its channel's addend, all loaded before the first is used.
    half_t res[4], add[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const int c = c0 + threadIdx.y + 8 * k, row = r0 + threadIdx.x;
        const bool inside = c < C && row < R;
        res[k] = inside && mode != 0 ? r[offset + (i64)c * R + row] : (half_t)0;
        add[k] = !inside ? (half_t)0 : mode == 0 ? v[(i64)blockIdx.z * v_stride + c] : bias ? bias[c] : (half_t)0;
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const int j = threadIdx.y + 8 * k, c = c0 + j, row = r0 + threadIdx.x;
        if (c < C && row < R) {
            const float x = h2f(tile[threadIdx.x][j]);
            half_t out;
            if (mode == 0) {
                out = f2h(x + h2f(add[k]));
            } else if (bias) {
                out = f2h((h2f(res[k]) + (x + h2f(add[k]))) * scale);
            } else {
                out = f2h(h2f(res[k]) + x);
                if (scale != 1.f) out = f2h(h2f(out) * scale);
            }
            y[offset + (i64)c * R + row] = out;
        }
    }
}

// tokens_to_channels_epilogue where R and C are even: a 64×64 tile whose every global access moves two halves (two
// columns of a token row in, two positions of a channel row out), so that a warp moves 128 bytes per row where the
// 32×32 form moves 64. The same arithmetic per element. Block (32, 8).
extern "C" __global__ void tokens_to_channels_epilogue_pairs(const half_t* __restrict__ t, const half_t* __restrict__ v,
        int v_stride, const half_t* __restrict__ bias, const half_t* __restrict__ r, half_t* __restrict__ y, int R, int C,
        float scale, int mode) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ u32 tile[64][33];   // [token row][pair of channels]; the odd stride spreads a column over the banks
    const i64 offset = (i64)blockIdx.z * R * C;
    const int c0 = blockIdx.x * 64, r0 = blockIdx.y * 64, x2 = 2 * threadIdx.x;
    u32 in[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const int row = r0 + threadIdx.y + 8 * k, c = c0 + x2;
        in[k] = row < R && c < C ? *reinterpret_cast<const u32*>(t + offset + (i64)row * C + c) : 0u;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) tile[threadIdx.y + 8 * k][threadIdx.x] = in[k];
    __syncthreads();
    // Each pair's residual and its channel's addend, all loaded before the first is used.
    u32 res[8];
    half_t add[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const int c = c0 + threadIdx.y + 8 * k, row = r0 + x2;
        const bool inside = c < C && row < R;
        res[k] = inside && mode != 0 ? *reinterpret_cast<const u32*>(r + offset + (i64)c * R + row) : 0u;
        add[k] = !inside ? (half_t)0 : mode == 0 ? v[(i64)blockIdx.z * v_stride + c] : bias ? bias[c] : (half_t)0;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        const int j = threadIdx.y + 8 * k, c = c0 + j, row = r0 + x2;
        if (c < C && row < R) {
            const int shift = 16 * (j & 1);
            float x[2] = {h2f((half_t)(tile[x2][j >> 1] >> shift)), h2f((half_t)(tile[x2 + 1][j >> 1] >> shift))};
            float out[2];
            if (mode == 0) {
                const float a = h2f(add[k]);
                for (int e = 0; e < 2; ++e) out[e] = x[e] + a;
            } else {
                float rv[2];
                unpack2(res[k], rv[0], rv[1]);
                if (bias) {
                    const float b = h2f(add[k]);
                    for (int e = 0; e < 2; ++e) out[e] = (rv[e] + (x[e] + b)) * scale;
                } else {
                    for (int e = 0; e < 2; ++e) {
                        out[e] = h2f(f2h(rv[e] + x[e]));
                        if (scale != 1.f) out[e] *= scale;
                    }
                }
            }
            *reinterpret_cast<u32*>(y + offset + (i64)c * R + row) = pack_half2(out[0], out[1]);
        }
    }
}
"""# + (1...CUDAKernels.layerNormChunks).map { k in
        """
        extern "C" __global__ void __launch_bounds__(256) layer_norm_warp\(k)(const half_t* __restrict__ x,
                const half_t* __restrict__ gamma, const half_t* __restrict__ beta, half_t* __restrict__ y, i64 rows, int D,
                float eps, const float* __restrict__ affine, vec8* __restrict__ codes, int format) {
            __shared__ D8_ALIGN16 half_t gamma_s[256 * \(k)], beta_s[256 * \(k)];
            __shared__ D8_ALIGN16 float gain_s[256 * \(k)], shift_s[256 * \(k)];
            layer_norm_stage(gamma_s, beta_s, gain_s, shift_s, gamma, beta, codes ? affine : nullptr, D);
            D8_AFTER_PREVIOUS_KERNEL();
            layer_norm_rows<\(k)>(x, gamma_s, beta_s, y, rows, D, eps, gain_s, shift_s, codes, format);
        }

        """
    }.joined()

    /// Most 16-byte chunks per lane of the one-warp-per-row LayerNorm (`layer_norm_warp1` … `layer_norm_warp8`, K
    /// chunks each): rows up to 256·8 = 2048 wide.
    static let layerNormChunks = 8

    func fused(_ name: String) throws -> CUDAFunction {
        try compiler.function(name, module: "diffuse8_fused", source: Self.fusedSource)
    }

    /// `addChannelBias(x, v)` where image `n`'s vector starts at `v.address + (n·stride + offset)` halves.
    package func addChannelVector(_ x: CUDATensor, _ v: CUDATensor, offset: Int, stride: Int) throws -> CUDATensor {
        let n = x.shape[0], c = x.shape[1], spatial = x.count / (n * c)
        guard offset + (n - 1) * stride + c <= v.count else {
            throw CUDAError.invalidArgument("addChannelVector: \(v.shape) too small for \(x.shape) at offset \(offset)")
        }
        let y = try output(x.shape)
        try compiler.launch(fused("add_channel_vector"), grid: elementwiseGrid(x.count), block: (256, 1, 1), [
            .tensor(x), .pointer(v.address + UInt64(offset * 2)), .tensor(y), .int64(Int64(x.count)), .int(c), .int(spatial),
            .int(stride)])
        return y
    }

    /// `scale(add(residual, addChannelBias(x, bias per channel)), s)` on NCHW in one pass.
    package func biasResidual(_ x: CUDATensor, bias: CUDATensor, residual: CUDATensor, scale: Float = 1) throws -> CUDATensor {
        guard x.shape == residual.shape, bias.count == x.shape[1] else {
            throw CUDAError.invalidArgument("biasResidual: x \(x.shape), bias \(bias.shape), residual \(residual.shape)")
        }
        let y = try output(x.shape)
        try compiler.launch(fused("bias_residual"), grid: elementwiseGrid(x.count), block: (256, 1, 1), [
            .tensor(x), .tensor(bias), .tensor(residual), .tensor(y), .int64(Int64(x.count)), .int(x.shape[1]),
            .int(x.count / (x.shape[0] * x.shape[1])), .float(scale)])
        return y
    }

    /// tokens [N, H·W, C] back to NCHW [N, C, height, width] with `epilogue` applied in the same pass (bit for bit as
    /// `addChannelVector` or `biasResidual` / `add` then `scale` after `tokensToChannels`).
    package func tokensToChannels(_ tokens: CUDATensor, height: Int, width: Int, _ epilogue: CUDAConvolutionOutput) throws -> CUDATensor {
        try requireHalf(tokens, op: "tokensToChannels")
        guard tokens.shape.count == 3, tokens.shape[1] == height * width else {
            throw CUDAError.invalidArgument("tokensToChannels: tokens \(tokens.shape) for \(height)×\(width)")
        }
        let (n, hw, c) = (tokens.shape[0], tokens.shape[1], tokens.shape[2])
        let shape = [n, c, height, width]
        var arguments: [CUDAKernelArgument]
        var scale: Float = 1
        switch epilogue {
        case .channels:
            return try tokensToChannels(tokens, height: height, width: width)
        case .addingChannelVector(let rows, let offset):
            try requireHalf(rows, op: "tokensToChannels")
            guard rows.shape.count == 2, rows.shape[0] == n, offset >= 0, offset + c <= rows.shape[1] else {
                throw CUDAError.invalidArgument("tokensToChannels: rows \(rows.shape) at offset \(offset) for \(shape)")
            }
            arguments = [.pointer(rows.address + UInt64(offset * rows.dtype.byteSize)), .int(rows.shape[1]), .pointer(0), .pointer(0)]
        case .addingResidual(let residual, let bias, let residualScale):
            try requireHalf(residual, op: "tokensToChannels")
            guard residual.shape == shape, bias.map({ $0.count == c && $0.dtype == residual.dtype }) ?? true else {
                throw CUDAError.invalidArgument("tokensToChannels: residual \(residual.shape), bias \(bias?.shape ?? []) for \(shape)")
            }
            arguments = [.pointer(0), .int(0), .pointer(bias?.address ?? 0), .tensor(residual)]
            scale = residualScale
        }
        let y = try output(shape)
        arguments += [.tensor(y), .int(hw), .int(c), .float(scale), .int32(epilogue.isChannelVector ? 0 : 1)]
        if !pairedTransposeDisabled
            && Self.transposesInPairs(tokens: hw, channels: c, images: n, multiprocessors: context.multiprocessorCount) {
            try compiler.launch(fused("tokens_to_channels_epilogue_pairs"), grid: ((c + 63) / 64, (hw + 63) / 64, n),
                                block: (32, 8, 1), [.tensor(tokens)] + arguments)
        } else {
            try compiler.launch(fused("tokens_to_channels_epilogue"), grid: ((c + 31) / 32, (hw + 31) / 32, n), block: (32, 8, 1),
                                [.tensor(tokens)] + arguments)
        }
        return y
    }

    /// Whether `tokensToChannels(_:height:width:_:)` takes the paired 64×64 kernel: two halves per access need an even
    /// token count and channel count (each row then starts on a 4-byte boundary), and its grid must make at least two
    /// blocks per multiprocessor (fewer, larger blocks than the 32×32 kernel's measured slower on SD1.5's 16² and 8²
    /// levels).
    static func transposesInPairs(tokens: Int, channels: Int, images: Int, multiprocessors: Int) -> Bool {
        guard tokens > 0, channels > 0, images > 0, tokens % 2 == 0, channels % 2 == 0 else { return false }
        return (channels + 63) / 64 * ((tokens + 63) / 64) * images >= 2 * max(multiprocessors, 1)
    }

    /// `epilogue` applied to an NCHW result in passes of its own (what `tokensToChannels(_:height:width:_:)` does while
    /// it transposes).
    package func finish(_ y: CUDATensor, _ epilogue: CUDAConvolutionOutput) throws -> CUDATensor {
        switch epilogue {
        case .channels:
            return y
        case .addingChannelVector(let rows, let offset):
            return try addChannelVector(y, rows, offset: offset, stride: rows.shape[1])
        case .addingResidual(let residual, let bias, let scale):
            if let bias { return try biasResidual(y, bias: bias, residual: residual, scale: scale) }
            let sum = try add(residual, y)
            return scale == 1 ? sum : try self.scale(sum, scale)
        }
    }

    /// `add(tokensToChannels(tokens), residual)`: tokens [N, H·W, C], residual NCHW (a transformer's `proj_out`
    /// plus its input), in the same pass as an 8-bit convolution's result and its residual.
    package func tokensToChannelsAdding(_ tokens: CUDATensor, residual: CUDATensor) throws -> CUDATensor {
        guard residual.shape.count == 4 else {
            throw CUDAError.invalidArgument("tokensToChannelsAdding: tokens \(tokens.shape), residual \(residual.shape)")
        }
        return try tokensToChannels(tokens, height: residual.shape[2], width: residual.shape[3],
                                    .addingResidual(residual, bias: nil, scale: 1))
    }

    /// [O, C, kh, kw] → [O, kh, kw, C] (the weight layout of channels-last convolutions).
    public static func channelsLastWeight(_ w: Tensor) -> Tensor {
        let o = w.shape[0], c = w.shape[1], kh = w.shape[2], kw = w.shape[3]
        return Tensor(shape: [o, kh, kw, c]) { out in
            for oi in 0..<o { for ci in 0..<c { for y in 0..<kh { for x in 0..<kw {
                out[((oi * kh + y) * kw + x) * c + ci] = w.scalars[((oi * c + ci) * kh + y) * kw + x]
            } } } }
        }
    }

}

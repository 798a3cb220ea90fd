/// Direct convolutions for layers with few output or few input channels: a UNet's or VAE's `conv_out` (320 or 128
/// channels → 4 or 3) and `conv_in` (4 or 3 channels → 320, 512 or 128). Tensor-core paths pad such a layer's narrow
/// side to a whole tile (cuDNN's 16-bit `conv_out` of SDXL took 0.24 ms for 0.75 GFLOP); these kernels sum in FP32 on
/// the CUDA cores, with nothing padded. `conv2d`'s `.automatic` times them against the other paths.
extension CUDAKernels {
    /// Output channels `conv2d_direct_few_outputs` computes per pixel (its registers and shared-memory weights).
    static let directConvolutionMaxOutputs = 8
    /// Input channels `conv2d_direct_few_inputs` holds per pixel, each with a kernel of at most 3×3.
    static let directConvolutionMaxInputs = 8
    /// Output (or input) channels the register-blocked "same" 3×3 kernels take: `conv2d_direct_few_outputs_3x3` sums
    /// four outputs per pixel in a float4 of weights, `conv2d_direct_few_inputs_3x3` holds four input planes.
    static let directConvolution3x3Channels = 4

    /// Whether a direct kernel runs a convolution of this many channels and kernel size: at most 3×3, and at most 8
    /// output channels or at most 8 input channels.
    package static func directConvolutionApplies(inputChannels c: Int, outputChannels o: Int, kernelHeight kh: Int,
                                                 kernelWidth kw: Int) -> Bool {
        (1...3).contains(kh) && (1...3).contains(kw) && c >= 1 && o >= 1
            && (o <= directConvolutionMaxOutputs || c <= directConvolutionMaxInputs)
    }

    static let directConvolutionSource = CUDAKernelSources.prelude + #"""

#define D8_DIRECT_CHUNK 64

// Few outputs (O ≤ 8). A block is 8 warps over 32 output pixels (flattened over images and rows); warp w sums the
// input channels c ≡ w (mod 8) of each 64-channel chunk, whose weights the block holds in shared memory as
// [c][tap][8 outputs]; the warps' partial sums are then added in shared memory, and the bias with them.
extern "C" __global__ void __launch_bounds__(256) conv2d_direct_few_outputs(const half_t* __restrict__ x,
        const half_t* __restrict__ weight, const half_t* __restrict__ bias, half_t* __restrict__ y,
        int N, int C, int H, int W, int O, int kh, int kw, int stride, int pad, int OH, int OW) {
    __shared__ float4 wsm[D8_DIRECT_CHUNK * 9 * 2];
    __shared__ float partial[8][32][9];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, taps = kh * kw;
    const i64 P = (i64)OH * OW, p = (i64)blockIdx.x * 32 + lane;
    const bool valid = p < (i64)N * P;
    int n = 0, oy = 0, ox = 0;
    if (valid) { n = (int)(p / P); const int r = (int)(p - (i64)n * P); oy = r / OW; ox = r - oy * OW; }
    const int y0 = oy * stride - pad, x0 = ox * stride - pad;
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    D8_AFTER_PREVIOUS_KERNEL();
    for (int c0 = 0; c0 < C; c0 += D8_DIRECT_CHUNK) {
        const int cn = min(D8_DIRECT_CHUNK, C - c0);
        __syncthreads();
        for (int i = threadIdx.x; i < cn * taps * 8; i += 256) {
            const int o = i & 7, ct = i >> 3, c = ct / taps, t = ct - c * taps;
            ((float*)wsm)[i] = o < O ? h2f(weight[((i64)o * C + c0 + c) * taps + t]) : 0.f;
        }
        __syncthreads();
        if (!valid) continue;
        for (int c = warp; c < cn; c += 8) {
            const half_t* plane = x + ((i64)n * C + c0 + c) * H * W;
            for (int ky = 0; ky < kh; ++ky) {
                const int iy = y0 + ky;
                if (iy < 0 || iy >= H) continue;
                for (int kx = 0; kx < kw; ++kx) {
                    const int ix = x0 + kx;
                    if (ix < 0 || ix >= W) continue;
                    const float v = h2f(plane[(i64)iy * W + ix]);
                    const float4* wt = wsm + (c * taps + ky * kw + kx) * 2;
                    const float4 a = wt[0];
                    acc[0] = fmaf(v, a.x, acc[0]); acc[1] = fmaf(v, a.y, acc[1]);
                    acc[2] = fmaf(v, a.z, acc[2]); acc[3] = fmaf(v, a.w, acc[3]);
                    if (O > 4) {
                        const float4 b = wt[1];
                        acc[4] = fmaf(v, b.x, acc[4]); acc[5] = fmaf(v, b.y, acc[5]);
                        acc[6] = fmaf(v, b.z, acc[6]); acc[7] = fmaf(v, b.w, acc[7]);
                    }
                }
            }
        }
    }
    #pragma unroll
    for (int o = 0; o < 8; ++o) partial[warp][lane][o] = acc[o];
    __syncthreads();
    if (threadIdx.x >= 32 * O) return;
    const int l = threadIdx.x & 31, o = threadIdx.x >> 5;
    const i64 q = (i64)blockIdx.x * 32 + l;
    if (q >= (i64)N * P) return;
    float sum = bias ? h2f(bias[o]) : 0.f;
    #pragma unroll
    for (int w = 0; w < 8; ++w) sum += partial[w][l][o];
    const i64 image = q / P;
    y[(image * O + o) * P + (q - image * P)] = f2h(sum);
}

// Few inputs (C ≤ 8, kernels up to 3×3). One thread per output pixel holds its C·kh·kw inputs in registers (slots
// [c][ky·3 + kx], zero outside the image); the block's 64 output channels (blockIdx.y) have their weights in shared
// memory in the same slots, 12 floats per channel so that three 16-byte reads fetch them.
extern "C" __global__ void __launch_bounds__(256) conv2d_direct_few_inputs(const half_t* __restrict__ x,
        const half_t* __restrict__ weight, const half_t* __restrict__ bias, half_t* __restrict__ y,
        int N, int C, int H, int W, int O, int kh, int kw, int stride, int pad, int OH, int OW) {
    __shared__ float4 wsm[64][8][3];
    const int o0 = blockIdx.y * 64, on = min(64, O - o0), taps = kh * kw;
    D8_AFTER_PREVIOUS_KERNEL();
    for (int i = threadIdx.x; i < 64 * 8 * 12; i += 256) {
        const int o = i / 96, slot = i - o * 96, c = slot / 12, t = slot - c * 12, ky = t / 3, kx = t - ky * 3;
        ((float*)wsm)[i] = (o < on && c < C && t < 9 && ky < kh && kx < kw)
            ? h2f(weight[(((i64)(o0 + o) * C + c) * kh + ky) * kw + kx]) : 0.f;
    }
    __syncthreads();
    const i64 P = (i64)OH * OW, p = (i64)blockIdx.x * 256 + threadIdx.x;
    if (p >= (i64)N * P) return;
    const int n = (int)(p / P), r = (int)(p - (i64)n * P), oy = r / OW, ox = r - oy * OW;
    const int y0 = oy * stride - pad, x0 = ox * stride - pad;
    float v[72];
    #pragma unroll
    for (int c = 0; c < 8; ++c) {
        #pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            #pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
                const int iy = y0 + ky, ix = x0 + kx;
                v[c * 9 + ky * 3 + kx] = (c < C && ky < kh && kx < kw && iy >= 0 && iy < H && ix >= 0 && ix < W)
                    ? h2f(x[(((i64)n * C + c) * H + iy) * W + ix]) : 0.f;
            }
        }
    }
    half_t* out = y + ((i64)n * O + o0) * P + r;
    for (int o = 0; o < on; ++o) {
        float a = bias ? h2f(bias[o0 + o]) : 0.f, b = 0.f;
        #pragma unroll
        for (int c = 0; c < 8; ++c) {
            if (c >= C) break;
            const float4 w0 = wsm[o][c][0], w1 = wsm[o][c][1], w2 = wsm[o][c][2];
            const float* s = v + c * 9;
            a = fmaf(s[0], w0.x, a); b = fmaf(s[1], w0.y, b); a = fmaf(s[2], w0.z, a); b = fmaf(s[3], w0.w, b);
            a = fmaf(s[4], w1.x, a); b = fmaf(s[5], w1.y, b); a = fmaf(s[6], w1.z, a); b = fmaf(s[7], w1.w, b);
            a = fmaf(s[8], w2.x, a);
        }
        out[(i64)o * P] = f2h(a + b);
    }
}

// Few outputs (O ≤ 4), 3×3, stride 1: each thread sums 4 neighbouring pixels of a row for its warp's channels
// (c ≡ warp mod 16), so that every weight read from shared memory feeds 16 FMAs and the 3×6 input window of a channel
// is loaded once (as 8-byte vectors where W is a multiple of 4). Block: 16 warps over 32 pixel quads; the warps' sums
// are added in shared memory.
extern "C" __global__ void __launch_bounds__(512, 2) conv2d_direct_few_outputs_3x3(const half_t* __restrict__ x,
        const half_t* __restrict__ weight, const half_t* __restrict__ bias, half_t* __restrict__ y,
        int N, int C, int H, int W, int O, int pad) {
    __shared__ float4 wsm[D8_DIRECT_CHUNK * 9];
    __shared__ float partial[16][32][17];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, quads = (W + 3) / 4;
    const i64 g = (i64)blockIdx.x * 32 + lane, groups = (i64)N * H * quads;
    const bool valid = g < groups;
    int n = 0, oy = 0, ox = 0;
    if (valid) { n = (int)(g / ((i64)H * quads)); const int r = (int)(g - (i64)n * H * quads); oy = r / quads; ox = (r - oy * quads) * 4; }
    const bool vector = (W & 3) == 0 && pad == 1;
    float acc[4][4];
    #pragma unroll
    for (int px = 0; px < 4; ++px) {
        #pragma unroll
        for (int o = 0; o < 4; ++o) acc[px][o] = 0.f;
    }
    D8_AFTER_PREVIOUS_KERNEL();
    for (int c0 = 0; c0 < C; c0 += D8_DIRECT_CHUNK) {
        const int cn = min(D8_DIRECT_CHUNK, C - c0);
        __syncthreads();
        for (int i = threadIdx.x; i < cn * 36; i += 512) {
            const int o = i & 3, ct = i >> 2, c = ct / 9, t = ct - c * 9;
            ((float*)wsm)[i] = o < O ? h2f(weight[((i64)o * C + c0 + c) * 9 + t]) : 0.f;
        }
        __syncthreads();
        if (!valid) continue;
        #pragma unroll 2
        for (int c = warp; c < cn; c += 16) {
            const half_t* plane = x + ((i64)n * C + c0 + c) * H * W;
            float v[3][6];
            #pragma unroll
            for (int ky = 0; ky < 3; ++ky) {
                const int iy = oy - pad + ky;
                const bool row = iy >= 0 && iy < H;
                const half_t* line = plane + (i64)iy * W;
                if (vector) {
                    // columns ox-1 … ox+4: ox is a multiple of 4, so ox … ox+3 are one aligned 8-byte load
                    u32 mid[2] = {0u, 0u};
                    if (row) { const vec8 m = *(const vec8*)(line + ox); mid[0] = m.x; mid[1] = m.y; }
                    unpack2(mid[0], v[ky][1], v[ky][2]);
                    unpack2(mid[1], v[ky][3], v[ky][4]);
                    v[ky][0] = row && ox > 0 ? h2f(line[ox - 1]) : 0.f;
                    v[ky][5] = row && ox + 4 < W ? h2f(line[ox + 4]) : 0.f;
                } else {
                    #pragma unroll
                    for (int j = 0; j < 6; ++j) {
                        const int ix = ox - pad + j;
                        v[ky][j] = row && ix >= 0 && ix < W ? h2f(line[ix]) : 0.f;
                    }
                }
            }
            #pragma unroll
            for (int t = 0; t < 9; ++t) {
                const float4 wt = wsm[c * 9 + t];
                const int ky = t / 3, kx = t % 3;
                #pragma unroll
                for (int px = 0; px < 4; ++px) {
                    const float s = v[ky][px + kx];
                    acc[px][0] = fmaf(s, wt.x, acc[px][0]); acc[px][1] = fmaf(s, wt.y, acc[px][1]);
                    acc[px][2] = fmaf(s, wt.z, acc[px][2]); acc[px][3] = fmaf(s, wt.w, acc[px][3]);
                }
            }
        }
    }
    #pragma unroll
    for (int px = 0; px < 4; ++px) {
        #pragma unroll
        for (int o = 0; o < 4; ++o) partial[warp][lane][px * 4 + o] = acc[px][o];
    }
    __syncthreads();
    // thread t: quad t % 32 of the block, output (channel, pixel) t / 32
    const int l = threadIdx.x & 31, k = threadIdx.x >> 5, o = k & 3, px = k >> 2;
    const i64 q = (i64)blockIdx.x * 32 + l;
    if (o >= O || q >= groups) return;
    const int image = (int)(q / ((i64)H * quads)), r = (int)(q - (i64)image * H * quads), row = r / quads;
    const int column = (r - row * quads) * 4 + px;
    if (column >= W) return;
    float sum = bias ? h2f(bias[o]) : 0.f;
    #pragma unroll
    for (int w = 0; w < 16; ++w) sum += partial[w][l][px * 4 + o];
    y[(((i64)image * O + o) * H + row) * W + column] = f2h(sum);
}

// Few inputs (C ≤ 4), 3×3, stride 1: each thread holds the C × 3 × 6 inputs of 4 neighbouring pixels of a row and
// makes their outputs for the block's 32 output channels (blockIdx.y), so that each weight read from shared memory
// feeds 4 FMAs. Blocks of 128 quads: SDXL's conv_in makes 640 of them, five per multiprocessor.
extern "C" __global__ void __launch_bounds__(128) conv2d_direct_few_inputs_3x3(const half_t* __restrict__ x,
        const half_t* __restrict__ weight, const half_t* __restrict__ bias, half_t* __restrict__ y,
        int N, int C, int H, int W, int O, int pad) {
    __shared__ float4 wsm[32][4][3];
    const int o0 = blockIdx.y * 32, on = min(32, O - o0), quads = (W + 3) / 4;
    D8_AFTER_PREVIOUS_KERNEL();
    for (int i = threadIdx.x; i < 32 * 4 * 12; i += 128) {
        const int o = i / 48, slot = i - o * 48, c = slot / 12, t = slot - c * 12;
        ((float*)wsm)[i] = (o < on && c < C && t < 9) ? h2f(weight[((i64)(o0 + o) * C + c) * 9 + t]) : 0.f;
    }
    __syncthreads();
    const i64 g = (i64)blockIdx.x * 128 + threadIdx.x;
    if (g >= (i64)N * H * quads) return;
    const int n = (int)(g / ((i64)H * quads)), r = (int)(g - (i64)n * H * quads), oy = r / quads, ox = (r - oy * quads) * 4;
    float v[4][3][6];
    #pragma unroll
    for (int c = 0; c < 4; ++c) {
        #pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            const int iy = oy - pad + ky;
            #pragma unroll
            for (int j = 0; j < 6; ++j) {
                const int ix = ox - pad + j;
                v[c][ky][j] = c < C && iy >= 0 && iy < H && ix >= 0 && ix < W ? h2f(x[(((i64)n * C + c) * H + iy) * W + ix]) : 0.f;
            }
        }
    }
    const bool vector = (W & 3) == 0;
    half_t* out = y + (((i64)n * O + o0) * H + oy) * W + ox;
    for (int o = 0; o < on; ++o) {
        const float b = bias ? h2f(bias[o0 + o]) : 0.f;
        float acc[4] = {b, b, b, b};
        #pragma unroll
        for (int c = 0; c < 4; ++c) {
            if (c >= C) break;
            const float4 w0 = wsm[o][c][0], w1 = wsm[o][c][1], w2 = wsm[o][c][2];
            const float k[9] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w, w2.x};
            #pragma unroll
            for (int t = 0; t < 9; ++t) {
                #pragma unroll
                for (int px = 0; px < 4; ++px) acc[px] = fmaf(v[c][t / 3][px + t % 3], k[t], acc[px]);
            }
        }
        half_t* line = out + (i64)o * H * W;
        if (vector) {
            vec8 s; s.x = pack_half2(acc[0], acc[1]); s.y = pack_half2(acc[2], acc[3]);
            *(vec8*)line = s;
        } else {
            #pragma unroll
            for (int px = 0; px < 4; ++px) if (ox + px < W) line[px] = f2h(acc[px]);
        }
    }
}
"""#

    func directConvolutionFunction(_ name: String) throws -> CUDAFunction {
        try compiler.function(name, module: "diffuse8_direct_convolution", source: Self.directConvolutionSource)
    }

    /// `conv2d` through the direct kernel for its shape (`directConvolutionApplies`), bias included.
    func directConvolution(_ x: CUDATensor, weight: CUDATensor, bias: CUDATensor?, into y: CUDATensor,
                           stride: Int, padding: Int) throws {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3], oh = y.shape[2], ow = y.shape[3]
        guard Self.directConvolutionApplies(inputChannels: c, outputChannels: o, kernelHeight: kh, kernelWidth: kw),
              stride >= 1, padding >= 0 else {
            throw CUDAError.invalidArgument("conv2d: no direct kernel for \(c) → \(o) channels, \(kh)×\(kw)")
        }
        let pixels = n * oh * ow, quads = n * oh * ((ow + 3) / 4)
        if kh == 3 && kw == 3 && stride == 1 && oh == h && ow == w
            && (o <= Self.directConvolution3x3Channels || c <= Self.directConvolution3x3Channels) {
            // "same" 3×3: the register-blocked kernels
            let arguments: [CUDAKernelArgument] = [
                .tensor(x), .tensor(weight), .pointer(bias?.address ?? 0), .tensor(y), .int(n), .int(c), .int(h), .int(w),
                .int(o), .int(padding)]
            if o <= Self.directConvolution3x3Channels {
                try compiler.launch(directConvolutionFunction("conv2d_direct_few_outputs_3x3"), grid: ((quads + 31) / 32, 1, 1),
                                    block: (512, 1, 1), arguments)
            } else {
                try compiler.launch(directConvolutionFunction("conv2d_direct_few_inputs_3x3"), grid: ((quads + 127) / 128, (o + 31) / 32, 1),
                                    block: (128, 1, 1), arguments)
            }
            return
        }
        let arguments: [CUDAKernelArgument] = [
            .tensor(x), .tensor(weight), .pointer(bias?.address ?? 0), .tensor(y), .int(n), .int(c), .int(h), .int(w),
            .int(o), .int(kh), .int(kw), .int(stride), .int(padding), .int(oh), .int(ow)]
        if o <= Self.directConvolutionMaxOutputs {
            try compiler.launch(directConvolutionFunction("conv2d_direct_few_outputs"), grid: ((pixels + 31) / 32, 1, 1),
                                block: (256, 1, 1), arguments)
        } else {
            try compiler.launch(directConvolutionFunction("conv2d_direct_few_inputs"), grid: ((pixels + 255) / 256, (o + 63) / 64, 1),
                                block: (256, 1, 1), arguments)
        }
    }
}

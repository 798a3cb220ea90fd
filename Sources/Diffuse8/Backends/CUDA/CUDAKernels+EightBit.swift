/// Real 8-bit Linear layers: the activation is quantized to INT8/FP8 codes with the layer's calibrated scale (and
/// SmoothQuant factors), then multiplied by the stored weight codes on the tensor cores (`CUDAMatmul.Precision`).
/// The rounding is `QuantizedFormat`'s, as in the simulation (`fake_quantize`), so the only differences from the
/// simulation are the accumulation order and the 16-bit output rounding.
extension CUDAKernels {
    static let eightBitSource = CUDAKernelSources.prelude + #"""

// codes = code(x ⊙ s / scale); eight values per item, 32-bit index arithmetic (n8 = n / 8 < 2^31; width a multiple
// of 8). Each thread takes up to four items a grid apart and issues their loads before it converts the first (the
// grid sets how many: `CUDAKernels.quantizePassItemsPerThread`).
extern "C" __global__ void quantize_static8(const half_t* __restrict__ x, const float* __restrict__ smoothing,
        vec8* __restrict__ codes, u32 n8, int width, float scale, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    const u32 groups = (u32)width / 8u, stride = gridDim.x * blockDim.x;
    for (u32 first = blockIdx.x * blockDim.x + threadIdx.x; first < n8; first += 4u * stride) {
        vec16 raw[4];
#pragma unroll
        for (u32 k = 0; k < 4u; ++k) {
            const u32 i = first + k * stride;
            if (i < n8) raw[k] = ((const vec16*)x)[i];
        }
#pragma unroll
        for (u32 k = 0; k < 4u; ++k) {
            const u32 i = first + k * stride;
            if (i < n8) {
                float v[8], f[8];
                unpack8(raw[k], v);
                if (smoothing) {  // the eight columns' factors in two 16-byte loads
                    const vec16 lo = ((const vec16*)smoothing)[(i % groups) * 2u], hi = ((const vec16*)smoothing)[(i % groups) * 2u + 1u];
                    const u32 bits[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
                    for (int e = 0; e < 8; ++e) f[e] = __uint_as_float(bits[e]);
                }
                codes[i] = quantize8(v, smoothing ? f : 0, scale, format);
            }
        }
    }
}

// codes = code(x * s[i % width]); four values per thread (n4 = n / 4; n and width multiples of 4).
extern "C" __global__ void quantize_static4(const half_t* __restrict__ x, const float* __restrict__ smoothing,
        u32* __restrict__ codes, i64 n4, int width, float scale, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    const float r = __frcp_rn(scale);
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n4; i += (i64)gridDim.x * blockDim.x) {
        const vec8 raw = ((const vec8*)x)[i];
        const half_t h[4] = {(half_t)(raw.x & 0xffffu), (half_t)(raw.x >> 16), (half_t)(raw.y & 0xffffu), (half_t)(raw.y >> 16)};
        const int j = (int)((i * 4) % width);
        float a[4];
        for (int t = 0; t < 4; t++) {
            float v = h2f(h[t]);
            if (smoothing) v *= smoothing[j + t];
            a[t] = divide_by_scale(v, scale, r);
        }
        codes[i] = codes_of_quotients4(a, format);
    }
}

extern "C" __global__ void quantize_static(const half_t* __restrict__ x, const float* __restrict__ smoothing,
        unsigned char* __restrict__ codes, i64 n, int width, float scale, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        float v = h2f(x[i]);
        if (smoothing) v *= smoothing[i % width];
        codes[i] = (unsigned char)quantize_code(v, scale, format);
    }
}

// y[r, j] = acc[r, j] * alpha[j] (+ bias[j]) (+ residual[r, j]) in FP32, stored 16-bit: the INT8 GEMM's epilogue.
extern "C" __global__ void dequantize_accumulators(const int* __restrict__ acc, const float* __restrict__ alpha,
        const half_t* __restrict__ bias, const half_t* __restrict__ residual, half_t* __restrict__ y, i64 n, int cols) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const int j = (int)(i % cols);
        float v = (float)acc[i] * alpha[j];
        if (bias) v += h2f(bias[j]);
        if (residual) v += h2f(residual[i]);
        y[i] = f2h(v);
    }
}

// y[r, j] = sums[r, j] * alpha[j] (+ bias[j]) in FP32, stored 16-bit: the FP32 sums of an FP8 convolution.
extern "C" __global__ void dequantize_float_sums(const float* __restrict__ sums, const float* __restrict__ alpha,
        const half_t* __restrict__ bias, half_t* __restrict__ y, i64 n, int cols) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const int j = (int)(i % cols);
        float v = sums[i] * alpha[j];
        if (bias) v += h2f(bias[j]);
        y[i] = f2h(v);
    }
}

// tile[c][p] = x[c0 + c, p0 + p] of one image's [C, P] values (0 outside), for a 32×8 block; all four of a thread's
// loads issued before the first is used.
__device__ __forceinline__ void load_channel_tile(const half_t* __restrict__ x, int C, int P, int c0, int p0, float (*tile)[33]) {
    half_t in[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        const int c = c0 + threadIdx.y + 8 * k, p = p0 + threadIdx.x;
        in[k] = c < C && p < P ? x[(i64)c * P + p] : (half_t)0;
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) tile[threadIdx.y + 8 * k][threadIdx.x] = h2f(in[k]);
    __syncthreads();
}

// codes[b, p, c] = code(x[b, c, p]): NCHW 16-bit values to channels-last 8-bit codes (the input of cuDNN's 8-bit
// convolutions), through a 32×32 shared-memory tile like transpose_batched.
extern "C" __global__ void quantize_channels_last(const half_t* __restrict__ x, unsigned char* __restrict__ codes,
        int C, int P, float scale, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ float tile[32][33];
    const i64 offset = (i64)blockIdx.z * C * P;
    const int p0 = blockIdx.x * 32, c0 = blockIdx.y * 32;
    load_channel_tile(x + offset, C, P, c0, p0, tile);
    for (int j = threadIdx.y; j < 32; j += 8) {
        const int p = p0 + j, c = c0 + threadIdx.x;
        if (p < P && c < C) codes[offset + (i64)p * C + c] = (unsigned char)quantize_code(tile[threadIdx.x][j], scale, format);
    }
}

// codes[b, (2y + dy)·2W + 2x + dx, c] = code(x[b, c, y·W + x]), dy, dx ∈ {0, 1}: quantize_channels_last of x upsampled
// 2× (nearest), read from x itself: each code of the input tile is stored at its four output pixels.
extern "C" __global__ void quantize_channels_last_upsampled2x(const half_t* __restrict__ x, unsigned char* __restrict__ codes,
        int C, int H, int W, float scale, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ float tile[32][33];
    const int P = H * W;
    const i64 offset = (i64)blockIdx.z * C * P;
    const int p0 = blockIdx.x * 32, c0 = blockIdx.y * 32;
    load_channel_tile(x + offset, C, P, c0, p0, tile);
    const i64 rowBytes = (i64)2 * W * C;   // one output row of codes
    for (int j = threadIdx.y; j < 32; j += 8) {
        const int p = p0 + j, c = c0 + threadIdx.x;
        if (p < P && c < C) {
            const unsigned char code = (unsigned char)quantize_code(tile[threadIdx.x][j], scale, format);
            const int y = p / W, xx = p - y * W;
            const i64 o = 4 * offset + 2 * (i64)y * rowBytes + (i64)(2 * xx) * C + c;
            codes[o] = code;
            codes[o + C] = code;
            codes[o + rowBytes] = code;
            codes[o + rowBytes + C] = code;
        }
    }
}

// y[r, j] = fq(x[r, j]) with column j's scale: level-4 FP8 rounding of stacked Q/K/V outputs, each with its own amax.
extern "C" __global__ void fake_quantize_columns(const half_t* __restrict__ x, const float* __restrict__ scales,
        half_t* __restrict__ y, i64 n, int cols, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        y[i] = f2h(fake_quantize(h2f(x[i]), scales[i % cols], format));
}

// The same, eight values per thread (n8 = n / 8 < 2^31; cols a multiple of 8).
extern "C" __global__ void fake_quantize_columns8(const vec16* __restrict__ x, const float* __restrict__ scales,
        vec16* __restrict__ y, u32 n8, int cols, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    const u32 groups = (u32)cols / 8u;
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += gridDim.x * blockDim.x) {
        float v[8];
        unpack8(x[i], v);
        const float* s = scales + (i % groups) * 8u;
        y[i] = vec16{pack_half2(fake_quantize(v[0], s[0], format), fake_quantize(v[1], s[1], format)),
                     pack_half2(fake_quantize(v[2], s[2], format), fake_quantize(v[3], s[3], format)),
                     pack_half2(fake_quantize(v[4], s[4], format), fake_quantize(v[5], s[5], format)),
                     pack_half2(fake_quantize(v[6], s[6], format), fake_quantize(v[7], s[7], format))};
    }
}

// y = decode(codes) * scale, 16-bit: the input a producer quantized for a layer that fell back to 16 bit.
extern "C" __global__ void dequantize_activation(const unsigned char* __restrict__ codes, half_t* __restrict__ y, i64 n,
        float scale, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        y[i] = f2h(decode_code(codes[i], format) * scale);
}

// w[r, c] = decode(codes[r, c]) * scales[perRow ? r : 0], 16-bit: the dequantized weight of a layer whose 8-bit GEMM
// cannot run (no algorithm for its shape).
extern "C" __global__ void dequantize_codes(const unsigned char* __restrict__ codes, const float* __restrict__ scales,
        int perRow, half_t* __restrict__ w, i64 n, int cols, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        w[i] = f2h(decode_code(codes[i], format) * scales[perRow ? (int)(i / cols) : 0]);
}
"""#

    func eightBitOp(_ name: String) throws -> CUDAFunction {
        try compiler.function(name, module: "diffuse8_eight_bit", source: Self.eightBitSource)
    }

    /// x ⊙ s (s: SmoothQuant factors over the last dimension, or none) as `format` codes with one `scale`
    /// (code = round(v / scale), `QuantizedFormat`'s rounding): an `.int8` or `.float8e4m3` tensor of x's shape, new or
    /// `out`.
    public func quantize(_ x: CUDATensor, format: QuantizedFormat, scale: Float, smoothing: CUDATensor?,
                         into out: CUDATensor? = nil) throws -> CUDATensor {
        try requireHalf(x, op: "quantize")
        // the factors' period; without factors any multiple of 8 lets the 8-wide kernel run
        let width = smoothing?.count ?? 8
        let codeType: CUDADataType = format == .int8 ? .int8 : .float8e4m3
        guard scale.isFinite, scale > 0, smoothing.map({ $0.dtype == .float32 && x.shape.last == $0.count }) ?? true,
              out.map({ $0.shape == x.shape && $0.dtype == codeType }) ?? true else {
            throw CUDAError.invalidArgument("quantize: scale \(scale), smoothing \(smoothing?.shape ?? []), output \(out?.shape ?? []) for input \(x.shape)")
        }
        let codes = try out ?? context.empty(x.shape, dtype: codeType)
        let formatCode: Int32 = format == .int8 ? 0 : 1
        if x.count % 8 == 0 && width % 8 == 0 && x.count / 8 <= Int(Int32.max) {
            let items = min(max(quantizePassItemsPerThread, 1), 4)
            try compiler.launch(eightBitOp("quantize_static8"), grid: elementwiseGrid((x.count / 8 + items - 1) / items), block: (256, 1, 1), [
                .tensor(x), .pointer(smoothing?.address ?? 0), .tensor(codes), .int32(Int32(x.count / 8)),
                .int(width), .float(scale), .int32(formatCode)])
        } else if x.count % 4 == 0 && width % 4 == 0 {
            try compiler.launch(eightBitOp("quantize_static4"), grid: elementwiseGrid(x.count / 4), block: (256, 1, 1), [
                .tensor(x), .pointer(smoothing?.address ?? 0), .tensor(codes), .int64(Int64(x.count / 4)), .int(width),
                .float(scale), .int32(formatCode)])
        } else {
            try compiler.launch(eightBitOp("quantize_static"), grid: elementwiseGrid(x.count), block: (256, 1, 1), [
                .tensor(x), .pointer(smoothing?.address ?? 0), .tensor(codes), .int64(Int64(x.count)), .int(width),
                .float(scale), .int32(formatCode)])
        }
        return codes
    }

    /// y = x·Wᵀ (+ bias) (+ residual) of an 8-bit layer: x quantized with the layer's static scale and smoothing
    /// factors (or already this layer's codes, from a producer that quantized its output: LayerNorm, GEGLU), then the
    /// 8-bit GEMM chosen for its problem (`tunedEightBitGEMM`). A layer whose shape has no 8-bit algorithm runs its
    /// dequantized weight in 16 bit. Level-4 Q/K/V (`w.outputScales`) come out rounded to their FP8 grids unless
    /// `roundsOutput` is false (a reader that quantizes them to those grids itself: cuDNN's FP8 attention). With
    /// `readerCodes`, the result is y as its reader's input codes instead of 16-bit values (then `roundsOutput` must be
    /// false: the codes are the rounding).
    package func eightBitLinear(_ x: CUDATensor, _ w: CUDAEightBitLinear, residual: CUDATensor?, roundsOutput: Bool = true,
                                readerCodes: ReaderCodes? = nil) throws -> CUDATensor {
        let rounding = roundsOutput ? w.outputScales : nil
        guard rounding == nil || readerCodes == nil else {
            throw CUDAError.invalidArgument("linear \(w.name): its output is rounded to FP8 grids or written as codes, not both")
        }
        guard x.shape.last == w.inFeatures else {
            throw CUDAError.invalidArgument("linear \(w.name): input \(x.shape) for \(w.inFeatures) input features")
        }
        let quantizedByProducer = x.dtype == w.codeType
        if let weight = w.fallbackWeight {
            let input: CUDATensor
            if quantizedByProducer {
                input = try output(x.shape)
                try compiler.launch(eightBitOp("dequantize_activation"), grid: elementwiseGrid(x.count), block: (256, 1, 1), [
                    .tensor(x), .tensor(input), .int64(Int64(x.count)), .float(w.inputScale), .int32(w.format == .int8 ? 0 : 1)])
            } else {
                input = try fakeQuantize(x, format: w.format, amax: w.inputAmax, smoothing: w.smoothing, groupSize: w.inFeatures)
            }
            let y = try linear(input, weight: weight, bias: w.bias, residual: residual)
            if let readerCodes { return try quantize(y, as: readerCodes) }
            return try rounding.map { try fakeQuantizeColumns(y, format: .fp8, scales: $0, into: y) } ?? y
        }
        let rows = x.count / w.inFeatures
        var shape = x.shape
        shape[shape.count - 1] = w.outFeatures
        if let residual, residual.shape != shape {
            throw CUDAError.invalidArgument("linear \(w.name): residual \(residual.shape) for output \(shape)")
        }
        let codes = quantizedByProducer ? x : try quantize(x, format: w.format, scale: w.inputScale, smoothing: w.smoothing)
        let y = try output(shape)
        let reading = try readerCodes.map { ($0, try context.empty(shape, dtype: $0.codeType)) }
        do {
            try tunedEightBitGEMM(codes, w, rows: rows, residual: residual, rounding: rounding, y: y, reading: reading)
            return reading?.1 ?? y
        } catch CUDAError.cublas(let call, let status, let detail) where !context.allocator.isCapturing {
            // No 8-bit algorithm for this shape (or the library refused it): this layer runs in 16 bit from now on.
            w.fallbackReason = "\(call) status \(status) \(detail)"
            w.fallbackWeight = try dequantizedWeight(w)
            return try eightBitLinear(x, w, residual: residual, roundsOutput: roundsOutput, readerCodes: readerCodes)
        }
    }

    /// The 8-bit GEMM of `w` on `codes` into `y` by the path chosen for its problem (`CUDATuningTable`, shared by
    /// every layer of that shape): on first use, outside a capture, every path that runs here is timed and the
    /// fastest kept — our warp-specialized wgmma GEMM (sm_90a) in each tile variant; for INT8 cuDNN's INT8 matmul with
    /// the dequantization fused and cuBLASLt's INT32 sums plus our dequantize kernel; for FP8 cuBLASLt's FP8 GEMM with
    /// its scales, bias and residual in the epilogue. `w.forcedGEMM` can force one. With `rounding` (level-4 Q/K/V:
    /// each column's FP8 scale) the output is rounded to those grids, in the wgmma GEMM's epilogue, after the other paths
    /// by a pass of their own, which their time includes. With `reading` (the reader's codes and the tensor for them),
    /// the wgmma GEMM writes those codes in its epilogue (where they are in the layer's own format), the other paths
    /// write y and then quantize it for the reader, in the time they are measured by.
    private func tunedEightBitGEMM(_ codes: CUDATensor, _ w: CUDAEightBitLinear, rows: Int, residual: CUDATensor?,
                                   rounding: CUDATensor?, y: CUDATensor, reading: (ReaderCodes, CUDATensor)? = nil) throws {
        func run(_ path: CUDAEightBitLinear.GEMMPath) throws {
            w.lastGEMMPath = path
            w.lastCallRounded = rounding != nil
            w.lastReaderCodes = reading == nil ? nil : .pass
            if let (reader, out) = reading, case .warpSpecialized(let variant) = path, reader.format == w.format {
                try warpSpecializedGEMM(variant, format: w.format, codes: codes, rows: rows, weight: w.codes,
                                        weightMap: try w.weightMap(for: variant, kernels: self), epilogue: try w.epilogueOperands(self),
                                        residual: residual, codeFactors: reader.operands, y: out)
                w.lastReaderCodes = .epilogue
                return
            }
            try runUnrounded(path)
            if let rounding, !path.roundsOutput { _ = try fakeQuantizeColumns(y, format: .fp8, scales: rounding, into: y) }
            if let (reader, out) = reading { _ = try quantize(y, as: reader, into: out) }
        }
        func runUnrounded(_ path: CUDAEightBitLinear.GEMMPath) throws {
            switch (path, w.format) {
            case (.cuBLASLt, .fp8):
                // Column-major: yᵀ[out, rows] = W[in, out]ᵀ · xᵀ[in, rows], scaled by (weight scale, input scale).
                try matmul.run(.init(m: w.outFeatures, n: rows, k: w.inFeatures, transA: true, transB: false, lda: w.inFeatures,
                                     ldb: w.inFeatures, ldd: w.outFeatures, epilogue: w.bias == nil ? .none : .bias, precision: .fp8),
                               a: w.codes.address, b: codes.address, d: y.address, bias: w.bias?.address, c: residual?.address,
                               scales: (w.scales.address, w.scales.address + 16))
            case (.cuBLASLt, .int8):
                let sums = try context.empty(y.shape, dtype: .int32)
                try matmul.run(.init(m: w.outFeatures, n: rows, k: w.inFeatures, transA: true, transB: false, lda: w.inFeatures,
                                     ldb: w.inFeatures, ldd: w.outFeatures, epilogue: .none, precision: .int8),
                               a: w.codes.address, b: codes.address, d: sums.address)
                try compiler.launch(eightBitOp("dequantize_accumulators"), grid: elementwiseGrid(y.count), block: (256, 1, 1), [
                    .tensor(sums), .tensor(w.scales), .pointer(w.bias?.address ?? 0), .pointer(residual?.address ?? 0), .tensor(y),
                    .int64(Int64(y.count)), .int(w.outFeatures)])
            case (.cuDNN, .int8):
                let gemm = CUDNNEightBitGraphs.Shape(n: 1, c: w.inFeatures, h: rows, w: 1, o: w.outFeatures, kh: 1, kw: 1, stride: 1,
                                                     padding: 0, format: .int8, isMatmul: true, hasBias: w.bias != nil,
                                                     hasResidual: residual != nil, outputType: storageType)
                let operands = CUDNNEightBitGraphs.Operands(x: codes.address, weight: w.codes.address, alpha: w.scales.address,
                                                            bias: w.bias?.address, residual: residual?.address, y: y.address)
                let graphs = try eightBitGraphs()
                try graphs.execute(try graphs.plan(gemm, timing: !context.allocator.isCapturing) { try graphs.execute($0, gemm, operands) },
                                   gemm, operands)
            case (.cuDNN, .fp8):
                throw CUDAError.invalidArgument("linear \(w.name): cuDNN's fused 8-bit matmul is INT8 only")
            case (.warpSpecialized(let variant), _):
                try warpSpecializedGEMM(variant, format: w.format, codes: codes, rows: rows, weight: w.codes,
                                        weightMap: try w.weightMap(for: variant, kernels: self), epilogue: try w.epilogueOperands(self),
                                        residual: residual, roundingScales: rounding, y: y)
            }
        }
        // TMA needs 16-byte aligned rows: unaligned operands leave the wgmma GEMM out (a separate problem).
        let wgmma = runsWarpSpecializedGEMM && [codes.address, y.address, residual?.address ?? 0, reading?.1.address ?? 0].allSatisfy { $0 % 16 == 0 }
        let candidates = CUDAEightBitLinear.GEMMPath.candidates(w.format, depth: w.inFeatures, wgmma: wgmma)
        if let forced = w.forcedGEMM {
            guard candidates.contains(forced) else {
                throw CUDAError.invalidArgument("linear \(w.name): \(forced.description(for: w.format)) does not run here (the wgmma 8-bit GEMM "
                                                + "needs compute capability 9.0 and 16-byte aligned operands; FP8 over more than 1280 "
                                                + "inputs leaves out its 128×256 tile)")
            }
            return try run(forced)
        }
        let call = CUDAEightBitLinear.GEMMCall(rows: rows, residual: residual != nil, wgmma: wgmma, rounded: rounding != nil,
                                               readerCodes: reading?.0.format)
        if let kept = w.gemmPaths[call] { return try run(kept) }
        let key = Self.eightBitLinearTuningKey(format: w.format, rows: rows, outFeatures: w.outFeatures, inFeatures: w.inFeatures,
                                               bias: w.bias != nil, residual: residual != nil, storageType: storageType, wgmma: wgmma)
            + (rounding == nil ? "" : " fp8-rounded=1") + (reading.map { " reader-codes=\($0.0.format == .int8 ? "int8" : "fp8")" } ?? "")
        w.gemmPaths[call] = try context.tuning.decide(key, encode: \.tuningCode, decode: { CUDAEightBitLinear.GEMMPath(tuningCode: $0).flatMap { candidates.contains($0) ? $0 : nil } },
                                  run: run) {
            try fastestPath(candidates, run: run, none: "linear \(w.name): no 8-bit GEMM ran")
        }
    }

    /// The tuning measurement of candidates that `run` queues: timed outside a capture; inside one nothing can be
    /// timed, so the first candidate that runs is kept (and has written its output).
    private func fastestPath<Path>(_ candidates: [Path], run: (Path) throws -> Void, none: String) throws -> CUDATuningTable.Measured<Path> {
        var lastError: Error?
        if context.allocator.isCapturing {
            for path in candidates {
                do { try run(path); return .init(path, timed: false, ran: true) } catch { lastError = error }
            }
        } else {
            let measured = CUDATuningTable.fastest(candidates) { path in try tuningTime { try run(path) } }
            if let best = measured.best { return .init(best.candidate, timed: true, ran: false) }
            lastError = measured.lastError
        }
        throw lastError ?? CUDAError.invalidArgument(none)
    }

    /// `geglu` of the 8-bit GEGLU projection `w` of x (diffusers' GEGLU: the projection's first half times GELU of its
    /// second half), as `reader`'s input codes where `reader` takes them, else 16-bit. By the path chosen for the
    /// problem: the tuned GEMM into [rows, 2n] and then the GEGLU kernel writing the codes, or (sm_90a) our wgmma GEMM
    /// with GEGLU in its epilogue, which writes `reader`'s codes itself (when `reader` is in the same format and
    /// `writesCodes`; else 16-bit [rows, n] and `reader`'s quantize pass).
    package func eightBitGEGLU(_ x: CUDATensor, _ w: CUDAEightBitLinear, reader: CUDAEightBitLinear?,
                               writesCodes: Bool = true) throws -> CUDATensor {
        guard x.shape.last == w.inFeatures else {
            throw CUDAError.invalidArgument("GEGLU projection \(w.name): input \(x.shape) for \(w.inFeatures) input features")
        }
        let n = w.outFeatures / 2, rows = x.count / w.inFeatures
        guard runsWarpSpecializedGEMM, w.fallbackWeight == nil, w.outFeatures % 32 == 0 else {
            return try geglu(try eightBitLinear(x, w, residual: nil), quantizingFor: reader)
        }
        let codes = x.dtype == w.codeType ? x : try quantize(x, format: w.format, scale: w.inputScale, smoothing: w.smoothing)
        let consumer = reader.flatMap { $0.acceptsCodes(width: n) ? $0 : nil }
        var shape = x.shape
        shape[shape.count - 1] = n
        var result: CUDATensor?
        func run(_ path: CUDAEightBitLinear.GEGLUPath) throws {
            switch path {
            case .separate:
                result = try geglu(try eightBitLinear(codes, w, residual: nil), quantizingFor: consumer)
            case .fused(let variant):
                let weightMap = try w.weightMap(for: variant, kernels: self, halves: true)
                w.lastGEGLUWroteCodes = false
                if let consumer, consumer.format == w.format, writesCodes {
                    w.lastGEGLUWroteCodes = true
                    let y = try context.empty(shape, dtype: consumer.codeType)
                    try warpSpecializedGEGLU(variant, format: w.format, codes: codes, rows: rows, weight: w.codes, weightMap: weightMap,
                                             epilogue: try w.epilogueOperands(self), codeFactors: try consumer.readerCodes(self).operands, y: y)
                    result = y
                } else {
                    let y = try output(shape)
                    try warpSpecializedGEGLU(variant, format: w.format, codes: codes, rows: rows, weight: w.codes, weightMap: weightMap,
                                             epilogue: try w.epilogueOperands(self), y: y)
                    result = try consumer.map { try quantize(y, format: $0.format, scale: $0.inputScale, smoothing: $0.smoothing) } ?? y
                }
            }
            w.lastGEGLUPath = path
        }
        // TMA needs 16-byte aligned operands: an unaligned input leaves the fused kernel out (a separate problem).
        let aligned = codes.address % 16 == 0
        let call = CUDAEightBitLinear.GEMMCall(rows: rows, residual: false, wgmma: aligned, rounded: false)
        if let forced = w.forcedGEGLU {
            try run(forced)
        } else if let kept = w.gegluPaths[call] {
            try run(kept)
        } else {
            let candidates = aligned ? CUDAEightBitLinear.GEGLUPath.candidates(w.format, depth: w.inFeatures) : [.separate]
            let key = "geglu-" + Self.eightBitLinearTuningKey(format: w.format, rows: rows, outFeatures: w.outFeatures, inFeatures: w.inFeatures,
                                                             bias: w.bias != nil, residual: false, storageType: storageType, wgmma: aligned)
                + " codes=\(consumer == nil ? 0 : writesCodes ? 1 : 2)"
            w.gegluPaths[call] = try context.tuning.decide(key, encode: \.tuningCode,
                                                           decode: { CUDAEightBitLinear.GEGLUPath(tuningCode: $0).flatMap { candidates.contains($0) ? $0 : nil } },
                                                           run: run) {
                try fastestPath(candidates, run: run, none: "GEGLU projection \(w.name): no path ran")
            }
        }
        guard let result else { throw CUDAError.invalidArgument("GEGLU projection \(w.name): no path ran") }
        return result
    }

    /// The tuning key of an 8-bit GEMM: everything its choice depends on (no layer names).
    static func eightBitLinearTuningKey(format: QuantizedFormat, rows: Int, outFeatures: Int, inFeatures: Int, bias: Bool,
                                        residual: Bool, storageType: CUDADataType, wgmma: Bool) -> String {
        "\(format == .int8 ? "int8" : "fp8")-linear m=\(rows) n=\(outFeatures) k=\(inFeatures) bias=\(bias ? 1 : 0) residual=\(residual ? 1 : 0) "
            + "output=\(storageType.rawValue) wgmma=\(wgmma ? 1 : 0)"
    }

    /// quantize → dequantize of each column j of x with `scales[j]` (FP32, one per column of the last dimension), into
    /// `y` (which may be x itself) or a new tensor.
    package func fakeQuantizeColumns(_ x: CUDATensor, format: QuantizedFormat, scales: CUDATensor, into y: CUDATensor? = nil) throws -> CUDATensor {
        try requireHalf(x, op: "fakeQuantizeColumns")
        guard scales.dtype == .float32, x.shape.last == scales.count, y.map({ $0.shape == x.shape && $0.dtype == x.dtype }) ?? true else {
            throw CUDAError.invalidArgument("fakeQuantizeColumns: \(scales.shape) scales for input \(x.shape)")
        }
        let y = try y ?? output(x.shape)
        if scales.count % 8 == 0, x.count / 8 < Int(Int32.max) {
            try compiler.launch(eightBitOp("fake_quantize_columns8"), grid: elementwiseGrid(x.count / 8), block: (256, 1, 1), [
                .tensor(x), .tensor(scales), .tensor(y), .int32(Int32(x.count / 8)), .int(scales.count), .int32(format == .int8 ? 0 : 1)])
            return y
        }
        try compiler.launch(eightBitOp("fake_quantize_columns"), grid: elementwiseGrid(x.count), block: (256, 1, 1), [
            .tensor(x), .tensor(scales), .tensor(y), .int64(Int64(x.count)), .int(scales.count), .int32(format == .int8 ? 0 : 1)])
        return y
    }

    /// The layer's weight codes × scales as a 16-bit [out, in] tensor.
    package func dequantizedWeight(_ w: CUDAEightBitLinear) throws -> CUDATensor {
        let weight = try output([w.outFeatures, w.inFeatures])
        try compiler.launch(eightBitOp("dequantize_codes"), grid: elementwiseGrid(weight.count), block: (256, 1, 1), [
            .tensor(w.codes), .tensor(w.weightScales), .int(w.weightScales.count > 1 ? 1 : 0), .tensor(weight),
            .int64(Int64(weight.count)), .int(w.inFeatures), .int32(w.format == .int8 ? 0 : 1)])
        return weight
    }

    /// cuDNN's 8-bit graphs, made on first use (throws, every time, when cuDNN is missing).
    func eightBitGraphs() throws -> CUDNNEightBitGraphs {
        if let cudnnEightBitGraphs { return cudnnEightBitGraphs }
        if let cudnnEightBitUnavailable { throw cudnnEightBitUnavailable }
        do {
            let made = try CUDNNEightBitGraphs(context: context)
            cudnnEightBitGraphs = made
            return made
        } catch {
            cudnnEightBitUnavailable = error
            throw error
        }
    }
}

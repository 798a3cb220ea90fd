/// Kernels the backend-neutral models need beyond the FP16 UNet's original set: an affine map
/// (`center_input_sample`), nearest resizing to any size and right/bottom zero padding (odd latent sizes,
/// `downsample_padding: 0`), and the simulated 8-bit activation path of quantized layers (SmoothQuant factors +
/// INT8/FP8 quantize→dequantize with a static or per-group dynamic scale), with the exact rounding rules of
/// `QuantizedFormat` (INT8: round half to even, clamp [-128, 127]; FP8 E4M3: saturate to ±448, round to nearest
/// even, subnormals of 2^-9).
extension CUDAKernels {
    static let modelOpsSource = CUDAKernelSources.prelude + #"""

extern "C" __global__ void affine(const half_t* __restrict__ x, half_t* __restrict__ y, i64 n, float scale, float shift) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        y[i] = f2h(scale * h2f(x[i]) + shift);
}

// F.interpolate(size=(OH, OW), mode="nearest") on NCHW: source index floor(dst * (in/out)), scale in FP32.
extern "C" __global__ void resize_nearest(const half_t* __restrict__ x, half_t* __restrict__ y, i64 n,
        int H, int W, int OH, int OW, float scaleY, float scaleX) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const int ox = (int)(i % OW); const i64 t = i / OW;
        const int oy = (int)(t % OH); const i64 nc = t / OH;
        const int sy = min((int)floorf((float)oy * scaleY), H - 1), sx = min((int)floorf((float)ox * scaleX), W - 1);
        y[i] = x[(nc * H + sy) * W + sx];
    }
}

// F.pad(x, (0, 1, 0, 1)) on NCHW.
extern "C" __global__ void pad_right_bottom(const half_t* __restrict__ x, half_t* __restrict__ y, i64 n, int H, int W) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const int ox = (int)(i % (W + 1)); const i64 t = i / (W + 1);
        const int oy = (int)(t % (H + 1)); const i64 nc = t / (H + 1);
        y[i] = (ox < W && oy < H) ? x[(nc * H + oy) * W + ox] : (half_t)0;
    }
}

__device__ __forceinline__ float amax_scale(float amax, float max_value) {
    return (amax > 0.f && amax < D8_INFINITY) ? amax / max_value : 1.f;
}

// Static: y = fq(x * s[i % width]) with one scale. smoothing may be null.
extern "C" __global__ void fake_quantize_static(const half_t* __restrict__ x, const float* __restrict__ smoothing,
        half_t* __restrict__ y, i64 n, int width, float scale, int format) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        float v = h2f(x[i]);
        if (smoothing) v *= smoothing[i % width];
        y[i] = f2h(fake_quantize(v, scale, format));
    }
}

// Dynamic: one block per group of `group` consecutive values (a token row, or a whole sample), scale = amax / max.
extern "C" __global__ void fake_quantize_dynamic(const half_t* __restrict__ x, const float* __restrict__ smoothing,
        half_t* __restrict__ y, i64 group, int width, int format, float max_value) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ float scratch[32];
    const i64 base = (i64)blockIdx.x * group;
    float m = 0.f;
    for (i64 i = threadIdx.x; i < group; i += blockDim.x) {
        float v = h2f(x[base + i]);
        if (smoothing) v *= smoothing[(base + i) % width];
        m = fmaxf(m, fabsf(v));
    }
    const float scale = amax_scale(block_max(m, scratch), max_value);
    for (i64 i = threadIdx.x; i < group; i += blockDim.x) {
        float v = h2f(x[base + i]);
        if (smoothing) v *= smoothing[(base + i) % width];
        y[base + i] = f2h(fake_quantize(v, scale, format));
    }
}

// Calibration statistics. out (u32, zeroed) receives max |x| as float bits: for non-negative floats the bit
// patterns order like the values, so atomicMax on them is a float max.
extern "C" __global__ void abs_max(const half_t* __restrict__ x, i64 n, u32* __restrict__ out) {
    D8_AFTER_PREVIOUS_KERNEL();
    __shared__ float scratch[32];
    float m = 0.f;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) m = fmaxf(m, fabsf(h2f(x[i])));
    m = block_max(m, scratch);
    if (threadIdx.x == 0) atomicMax(out, __float_as_uint(m));
}

// out[j] (u32 float bits, zeroed) = max |x[r, j]| over rows; block (256): 256 columns, blockIdx.y a chunk of rows.
extern "C" __global__ void column_abs_max(const half_t* __restrict__ x, i64 rows, int width, int rowsPerChunk,
        u32* __restrict__ out) {
    D8_AFTER_PREVIOUS_KERNEL();
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= width) return;
    const i64 r0 = (i64)blockIdx.y * rowsPerChunk, r1 = min64(rows, r0 + rowsPerChunk);
    float m = 0.f;
    for (i64 r = r0; r < r1; r++) m = fmaxf(m, fabsf(h2f(x[r * width + j])));
    atomicMax(out + j, __float_as_uint(m));
}
"""#

    func modelOp(_ name: String) throws -> CUDAFunction {
        try compiler.function(name, module: "diffuse8_model_ops", source: Self.modelOpsSource)
    }

    /// scale · x + shift, element-wise.
    public func affine(_ x: CUDATensor, scale: Float, shift: Float) throws -> CUDATensor {
        try requireHalf(x, op: "affine")
        let y = try output(x.shape)
        try compiler.launch(modelOp("affine"), grid: elementwiseGrid(x.count), block: (256, 1, 1), [
            .tensor(x), .tensor(y), .int64(Int64(x.count)), .float(scale), .float(shift)])
        return y
    }

    /// `F.interpolate(size=(height, width), mode="nearest")` on NCHW (`CPUKernels.resizeNearest`).
    public func resizeNearest(_ x: CUDATensor, height: Int, width: Int) throws -> CUDATensor {
        try requireHalf(x, op: "resizeNearest")
        guard x.shape.count == 4, height > 0, width > 0 else { throw CUDAError.invalidArgument("resizeNearest: \(x.shape) to \(height)×\(width)") }
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let y = try output([n, c, height, width])
        try compiler.launch(modelOp("resize_nearest"), grid: elementwiseGrid(y.count), block: (256, 1, 1), [
            .tensor(x), .tensor(y), .int64(Int64(y.count)), .int(h), .int(w), .int(height), .int(width),
            .float(Float(h) / Float(height)), .float(Float(w) / Float(width))])
        return y
    }

    /// `F.pad(x, (0, 1, 0, 1))` on NCHW.
    public func padRightBottom(_ x: CUDATensor) throws -> CUDATensor {
        try requireHalf(x, op: "padRightBottom")
        guard x.shape.count == 4 else { throw CUDAError.invalidArgument("padRightBottom: \(x.shape) is not NCHW") }
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let y = try output([n, c, h + 1, w + 1])
        try compiler.launch(modelOp("pad_right_bottom"), grid: elementwiseGrid(y.count), block: (256, 1, 1), [
            .tensor(x), .tensor(y), .int64(Int64(y.count)), .int(h), .int(w)])
        return y
    }

    /// max |x| over every element (downloads one number; waits for the stream).
    public func absMax(_ x: CUDATensor) throws -> Float {
        try requireHalf(x, op: "absMax")
        let out = try context.empty([1], dtype: .float32)
        try context.zero(out)
        try compiler.launch(modelOp("abs_max"), grid: elementwiseGrid(x.count), block: (256, 1, 1), [
            .tensor(x), .int64(Int64(x.count)), .tensor(out)])
        return try context.download(out).scalars[0]
    }

    /// max |x[..., j]| per column of the last dimension (downloads the vector; waits for the stream).
    public func columnAbsMax(_ x: CUDATensor) throws -> [Float] {
        try requireHalf(x, op: "columnAbsMax")
        let width = x.shape.last ?? 1, rows = x.count / max(width, 1)
        let out = try context.empty([width], dtype: .float32)
        try context.zero(out)
        let chunk = 64
        try compiler.launch(modelOp("column_abs_max"), grid: ((width + 255) / 256, (rows + chunk - 1) / chunk, 1), block: (256, 1, 1), [
            .tensor(x), .int64(Int64(rows)), .int(width), .int(chunk), .tensor(out)])
        return try context.download(out).scalars
    }

    /// `QuantizedLayer.quantizeActivation` on the device: x ⊙ smoothing (FP32 vector over the last dimension, may be
    /// nil), then quantize→dequantize in `format` with the scale of `amax` (static), or, when `amax` is nil, with
    /// each group's own amax (`groupSize` consecutive values: a token row for Linear, a sample for Conv2d).
    public func fakeQuantize(_ x: CUDATensor, format: QuantizedFormat, amax: Float?, smoothing: CUDATensor?,
                             groupSize: Int) throws -> CUDATensor {
        try requireHalf(x, op: "fakeQuantize")
        let width = smoothing?.count ?? 1
        guard smoothing.map({ $0.dtype == .float32 && x.count % $0.count == 0 && x.shape.last == $0.count }) ?? true else {
            throw CUDAError.invalidArgument("fakeQuantize: smoothing \(smoothing?.shape ?? []) for input \(x.shape)")
        }
        let y = try output(x.shape)
        let formatCode: Int32 = format == .int8 ? 0 : 1
        let smoothingPointer = smoothing?.address ?? 0
        if let amax {
            try compiler.launch(modelOp("fake_quantize_static"), grid: elementwiseGrid(x.count), block: (256, 1, 1), [
                .tensor(x), .pointer(smoothingPointer), .tensor(y), .int64(Int64(x.count)), .int(width),
                .float(format.scale(forAmax: amax)), .int32(formatCode)])
        } else {
            guard groupSize > 0, x.count % groupSize == 0 else {
                throw CUDAError.invalidArgument("fakeQuantize: group of \(groupSize) for \(x.count) values")
            }
            try compiler.launch(modelOp("fake_quantize_dynamic"), grid: (x.count / groupSize, 1, 1), block: (256, 1, 1), [
                .tensor(x), .pointer(smoothingPointer), .tensor(y), .int64(Int64(groupSize)), .int(width), .int32(formatCode),
                .float(format.maxValue)])
        }
        return y
    }
}

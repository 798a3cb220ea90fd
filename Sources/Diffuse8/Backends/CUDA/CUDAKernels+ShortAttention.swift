/// Attention for short sequences (CLIP's 77 tokens): one block per (query, batch·head), the query's scores
/// in shared memory, exact softmax in FP32, optionally causal. Any head dim; O(L²·D) work, which is nothing at
/// L = 77 but rules it out for image tokens (those use the fused kernels or `gemmAttention`).
extension CUDAKernels {
    static let shortAttentionSource = CUDAKernelSources.prelude + #"""
/// q, k, v rows of [B, L, stride] halves, head h at channel h·D; y [B, L, H·D]. Shared: D + L + 32 floats.
extern "C" __global__ void short_attention(const half_t* __restrict__ q, const half_t* __restrict__ k,
        const half_t* __restrict__ v, half_t* __restrict__ y, int H, int L, int D, int stride, float scale, int causal) {
    D8_AFTER_PREVIOUS_KERNEL();
    extern __shared__ float shared[];
    float* qs = shared;
    float* p = shared + D;
    float* scratch = p + L;
    const int i = blockIdx.x, b = blockIdx.y / H, h = blockIdx.y % H;
    const i64 base = (i64)b * L * stride + (i64)h * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = h2f(q[base + (i64)i * stride + d]);
    __syncthreads();
    const int keys = causal ? i + 1 : L;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int j = warp; j < keys; j += warps) {
        const half_t* row = k + base + (i64)j * stride;
        float s = 0.f;
        for (int d = lane; d < D; d += 32) s += qs[d] * h2f(row[d]);
        s = warp_sum(s);
        if (lane == 0) p[j] = s * scale;
    }
    __syncthreads();
    float m = -D8_INFINITY;
    for (int j = threadIdx.x; j < keys; j += blockDim.x) m = fmaxf(m, p[j]);
    m = block_max(m, scratch);
    float sum = 0.f;
    for (int j = threadIdx.x; j < keys; j += blockDim.x) { const float e = expf(p[j] - m); p[j] = e; sum += e; }
    sum = block_sum(sum, scratch);
    const float inverse = 1.f / sum;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < keys; ++j) acc += p[j] * h2f(v[base + (i64)j * stride + d]);
        y[((i64)b * L + i) * H * D + (i64)h * D + d] = f2h(acc * inverse);
    }
}
"""#

    /// Longest sequence `shortAttention` takes (its scores live in shared memory).
    public static let shortAttentionMaxLength = 1024

    /// Self-attention on rows of `stride` halves: query, key and value rows start at `query`, `key`, `value`
    /// (e.g. the three parts of one fused QKV projection [B, L, 3·C]); `causal`: query i sees keys 0…i
    /// (CLIP's text encoder, `F.scaled_dot_product_attention(is_causal=True)`). Output [batch, length, channels].
    func shortAttention(query: UInt64, key: UInt64, value: UInt64, stride: Int, batch: Int, length: Int,
                        channels: Int, heads: Int, causal: Bool, scale: Float? = nil) throws -> CUDATensor {
        guard channels % heads == 0, length <= Self.shortAttentionMaxLength, stride >= channels else {
            throw CUDAError.invalidArgument("shortAttention: \(channels) channels / \(heads) heads, \(length) tokens (≤ \(Self.shortAttentionMaxLength)), stride \(stride)")
        }
        let d = channels / heads
        let y = try output([batch, length, channels])
        let function = try compiler.function("short_attention", module: "diffuse8_short_attention", source: Self.shortAttentionSource)
        try compiler.launch(function, grid: (length, batch * heads, 1), block: (128, 1, 1),
                            sharedBytes: (d + length + 32) * 4, [
            .pointer(query), .pointer(key), .pointer(value), .tensor(y), .int(heads), .int(length), .int(d), .int(stride),
            .float(scale ?? 1 / Float(d).squareRoot()), .int(causal ? 1 : 0)])
        return y
    }
}

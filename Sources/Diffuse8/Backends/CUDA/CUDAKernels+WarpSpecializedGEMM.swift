/// Our own 8-bit GEMM for Hopper (sm_90a): y = (x·Wᵀ)·α[j] + bias[j] (+ residual), x and W 8-bit codes (both
/// K-contiguous), INT32 (INT8) or FP32 (FP8) sums on the tensor cores through `wgmma`, the dequantization, bias and
/// residual fused in the epilogue, one rounding to 16 bit.
///
/// Structure (the warp-specialized persistent design of Hopper GEMMs): one producer thread streams 128-byte-deep
/// K slices of x and W with TMA into a ring of shared-memory slots (128-byte swizzle, mbarrier-guarded); two
/// consumer warpgroups multiply with `wgmma.mma_async` straight from shared memory. In the ping-pong variants each
/// consumer takes whole 64-row tiles in turn, so one's epilogue overlaps the other's products; in the cooperative
/// variant both share a 128-row tile. The grid is one block per SM, walking the tiles.
///
/// Why our own: on Hopper the INT8 GEMMs of cuBLASLt and cuDNN run at about 1.5× the time of the same FP16 GEMM,
/// while the tensor cores multiply INT8 at twice the FP16 rate. Which variant (or library) is fastest depends on
/// the shape; `CUDAKernels.eightBitLinear` times them on first use.
extension CUDAKernels {
    /// One compiled tile shape of the warp-specialized GEMM.
    package struct WarpSpecializedGEMM: Hashable, Sendable, CustomStringConvertible {
        /// Output columns per tile (the `wgmma` N: 64 or 128).
        let columns: Int
        /// Shared-memory slots in the load ring.
        let stages: Int
        /// Consumers take whole 64-row tiles in turn (else they share 128-row tiles).
        let pingPong: Bool

        /// Rows per tile.
        var rows: Int { pingPong ? 64 : 128 }
        /// Bytes of one ring slot: `rows + columns` rows of 128 code bytes.
        var stageBytes: Int { (rows + columns) * 128 }
        /// Dynamic shared memory: the ring, 1 KB of alignment slack, the mbarriers.
        var sharedBytes: Int { stageBytes * stages + 1024 + 16 * stages + 16 }

        package var description: String { "wgmma \(pingPong ? "ping-pong 64" : "cooperative 128")×\(columns), \(stages) stages" }

        /// The variants timed per shape: large-N and short-K shapes favour the 64×128 ping-pong tile, small
        /// outputs the 64×64 one (more tiles than SMs), long K the cooperative 128×128 tile.
        package static let variants = [WarpSpecializedGEMM(columns: 128, stages: 8, pingPong: true),
                                       WarpSpecializedGEMM(columns: 64, stages: 10, pingPong: true),
                                       WarpSpecializedGEMM(columns: 128, stages: 6, pingPong: false)]
    }

    /// Whether this card runs the warp-specialized GEMM: `wgmma`/TMA need sm_90a (compute capability 9.0 exactly),
    /// and the driver must encode TMA descriptors.
    package var runsWarpSpecializedGEMM: Bool {
        context.computeCapability == (9, 0) && context.driver.cuTensorMapEncodeTiled != nil
            && WarpSpecializedGEMM.variants.allSatisfy { $0.sharedBytes <= context.maxSharedMemoryPerBlock }
    }

    /// y[rows, n] = (codes[rows, k] · weight[n, k]ᵀ) · α + bias (+ residual) with `variant`. `epilogue` holds
    /// (α[2j], α[2j+1], bias[2j], bias[2j+1]) per column pair (FP32 [n / 2, 4]). Requirements (checked by the
    /// caller): k and n multiples of 16, every address 16-byte aligned.
    func warpSpecializedGEMM(_ variant: WarpSpecializedGEMM, format: QuantizedFormat, codes: CUDATensor, rows: Int,
                             weight: CUDATensor, weightMap: CUDATensorMap, epilogue: CUDATensor,
                             residual: CUDATensor?, y: CUDATensor) throws {
        let (n, k) = (weight.shape[0], weight.shape[1])
        let function = try warpSpecializedFunction(variant, format: format)
        let inputMap = try context.tensorMap(codes.address, rows: rows, columns: k, boxRows: variant.rows)
        let tiles = ((rows + variant.rows - 1) / variant.rows) * ((n + variant.columns - 1) / variant.columns)
        try compiler.launch(function, grid: (min(tiles, context.multiprocessorCount), 1, 1), block: (384, 1, 1),
                            sharedBytes: variant.sharedBytes, [
            .tensorMap(inputMap), .tensorMap(weightMap), .tensor(epilogue), .pointer(residual?.address ?? 0), .tensor(y),
            .int(rows), .int(n), .int(k)])
    }

    /// The TMA descriptor of a layer's weight codes for `variant` (made once per layer and variant).
    func warpSpecializedWeightMap(_ weight: CUDATensor, _ variant: WarpSpecializedGEMM) throws -> CUDATensorMap {
        try context.tensorMap(weight.address, rows: weight.shape[0], columns: weight.shape[1], boxRows: variant.columns)
    }

    private func warpSpecializedFunction(_ variant: WarpSpecializedGEMM, format: QuantizedFormat) throws -> CUDAFunction {
        let module = "diffuse8_ws_gemm_\(format == .int8 ? "int8" : "fp8")_\(variant.pingPong ? "pp" : "coop")\(variant.columns)_s\(variant.stages)"
        let function = try compiler.function("gemm8_ws", module: module, architecture: "sm_90a",
                                             source: Self.warpSpecializedSource(variant, format: format))
        try compiler.allowSharedMemory(function, bytes: variant.sharedBytes)
        return function
    }

    /// The `wgmma.mma_async` m64nNk32 call with its N/2 accumulator registers spelled out (inline PTX needs each).
    static func wgmmaCall(columns n: Int, format: QuantizedFormat) -> String {
        let registers = n / 2
        let (instruction, constraint, scaleArguments) = format == .int8
            ? ("wgmma.mma_async.sync.aligned.m64n\(n)k32.s32.s8.s8", "+r", "")
            : ("wgmma.mma_async.sync.aligned.m64n\(n)k32.f32.e4m3.e4m3", "+f", ", 1, 1")
        let outputs = (0..<registers).map { "%\($0)" }.joined(separator: ",")
        let operands = (0..<registers).map { "\"\(constraint)\"(d[\($0)])" }.joined(separator: ", ")
        return """
        __device__ __forceinline__ void wgmma_tile(ACC* d, u64 da, u64 db) {
            asm volatile("{\\n.reg .pred p;\\nsetp.ne.b32 p, %\(registers + 2), 0;\\n\(instruction) {\(outputs)}, %\(registers), %\(registers + 1), p\(scaleArguments);\\n}\\n"
                : \(operands)
                : "l"(da), "l"(db), "r"(1));
        }

        """
    }

    static func warpSpecializedSource(_ variant: WarpSpecializedGEMM, format: QuantizedFormat) -> String {
        let defines = """
        #define FMT \(format == .int8 ? 0 : 1)
        #define BN \(variant.columns)
        #define STAGES \(variant.stages)
        \(variant.pingPong ? "#define PINGPONG" : "")

        """
        return CUDAKernelSources.prelude + "\n" + defines + warpSpecializedHead + wgmmaCall(columns: variant.columns, format: format)
            + warpSpecializedBody
    }

    private static let warpSpecializedHead = #"""
typedef unsigned long long u64;
#if FMT == 0
typedef int ACC;
#define ACC_FENCE "+r"
#else
typedef float ACC;
#define ACC_FENCE "+f"
#endif

"""#

    private static let warpSpecializedBody = #"""
#ifdef PINGPONG
#define BM 64                 // each consumer warpgroup takes whole tiles, in turn
#define EMPTY_COUNT 4
#else
#define BM 128                // the two consumer warpgroups share each tile, 64 rows each
#define EMPTY_COUNT 8
#endif
#define STAGE_BYTES ((BM + BN) * 128)

/// A `CUtensorMap` passed by value.
struct __align__(64) TensorMap { u64 v[16]; };

__device__ __forceinline__ float2 pick4(const float2* v, int i) { return i == 0 ? v[0] : i == 1 ? v[1] : i == 2 ? v[2] : v[3]; }
__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }
/// wgmma operand descriptor of a K-major tile in the 128-byte swizzle: 8-row atoms 1024 bytes apart.
__device__ __forceinline__ u64 smem_desc(u32 addr) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}
__device__ __forceinline__ void mbar_init(u32 bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    asm volatile("{\n.reg .pred done;\nLAB_WAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra LAB_WAIT;\n}\n" :: "r"(bar), "r"(parity) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_expect(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" :: "r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void tma_load(u32 dst, const TensorMap* map, int x, int y, u32 bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
                 :: "r"(dst), "l"((u64)map), "r"(x), "r"(y), "r"(bar) : "memory");
}

// Y[M, N] = (A[M, K] · B[N, K]ᵀ) · α + bias (+ residual), stored 16-bit. A, B: 8-bit codes read through the tensor
// maps (zero outside the matrices). epilogue[j / 2] = (α[j], α[j + 1], bias[j], bias[j + 1]) for even j.
extern "C" __global__ void __launch_bounds__(384, 1) gemm8_ws(
        const __grid_constant__ TensorMap a_map, const __grid_constant__ TensorMap b_map, const float4* __restrict__ epilogue,
        const half_t* __restrict__ residual, half_t* __restrict__ Y, int M, int N, int K) {
    extern __shared__ unsigned char smem_raw[];
    const u32 base = (smem_addr(smem_raw) + 1023) & ~1023u;
    // full[s] at bars + 8 s, empty[s] at bars + 8 (STAGES + s), the ping-pong turn of consumer c at bars + 8 (2 STAGES + c)
    const u32 bars = base + STAGES * STAGE_BYTES;
    const int tid = threadIdx.x, wg = tid >> 7;
    const int tilesN = (N + BN - 1) / BN, tiles = ((M + BM - 1) / BM) * tilesN, KT = (K + 127) >> 7;
    if (tid == 0) {
        for (int s = 0; s < STAGES; s++) { mbar_init(bars + 8 * s, 1); mbar_init(bars + 8 * (STAGES + s), EMPTY_COUNT); }
        for (int c = 0; c < 2; c++) mbar_init(bars + 8 * (2 * STAGES + c), 128);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 2) {   // producer warpgroup: one thread issues the loads, in the consumers' order
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (tid == 256) {
            int s = 0; u32 phase = 0;
            for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
                const int m0 = (t / tilesN) * BM, n0 = (t % tilesN) * BN;
                for (int kt = 0; kt < KT; kt++) {
                    mbar_wait(bars + 8 * (STAGES + s), phase ^ 1);
                    const u32 full = bars + 8 * s, slot = base + s * STAGE_BYTES;
                    mbar_expect(full, STAGE_BYTES);
                    tma_load(slot, &a_map, kt * 128, m0, full);
                    tma_load(slot + BM * 128, &b_map, kt * 128, n0, full);
                    if (++s == STAGES) { s = 0; phase ^= 1; }
                }
            }
        }
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int warp = (tid >> 5) & 3, lane = tid & 31, q = lane & 3;
    ACC acc[BN / 2];
#ifdef PINGPONG
    const int firstTile = blockIdx.x + wg * gridDim.x, tileStep = 2 * gridDim.x, aRows = 0;
#else
    const int firstTile = blockIdx.x, tileStep = gridDim.x, aRows = wg * 64;
#endif
    for (int t = firstTile; t < tiles; t += tileStep) {
        const int m0 = (t / tilesN) * BM, n0 = (t % tilesN) * BN;
        const int j = (t - blockIdx.x) / gridDim.x, p0 = j * KT;   // this tile's first slot in the load sequence
#ifdef PINGPONG
        // The consumers' main loops take turns in tile order, so that no consumer waits on a slot a whole ring ahead
        // of the loads (an mbarrier's parity cannot tell those phases apart).
        if (j > 0) mbar_wait(bars + 8 * (2 * STAGES + (1 - wg)), ((j - 2 + wg) >> 1) & 1);
#endif
        #pragma unroll
        for (int i = 0; i < BN / 2; i++) acc[i] = 0;
        int previous = -1;
        for (int kt = 0; kt < KT; kt++) {
            const int s = (p0 + kt) % STAGES;
            mbar_wait(bars + 8 * s, ((p0 + kt) / STAGES) & 1);
            const u32 slot = base + s * STAGE_BYTES;
            #pragma unroll
            for (int i = 0; i < BN / 2; i++) asm volatile("" : ACC_FENCE(acc[i]) :: "memory");
            asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
            #pragma unroll
            for (int kk = 0; kk < 4; kk++)
                wgmma_tile(acc, smem_desc(slot + aRows * 128 + kk * 32), smem_desc(slot + BM * 128 + kk * 32));
            asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
            // the previous slot's products are done: hand it back to the producer
            asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
            if (previous >= 0 && lane == 0) mbar_arrive(bars + 8 * (STAGES + previous));
            previous = s;
        }
#ifdef PINGPONG
        mbar_arrive(bars + 8 * (2 * STAGES + wg));
#endif
        // The epilogue's operands load while the last products finish: (α, α, bias, bias) of this thread's column
        // pairs, and the residual's 16-byte pieces this thread writes after the quad transpose below.
        const int row = m0 + aRows + warp * 16 + (lane >> 2);
        float4 ep[BN / 8];
        #pragma unroll
        for (int i = 0; i < BN / 8; i++) {
            const int col = n0 + i * 8 + 2 * q;
            ep[i] = col < N ? epilogue[col >> 1] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        vec16 res[2][BN / 32];
        #pragma unroll
        for (int hh = 0; hh < 2; hh++)
            #pragma unroll
            for (int g4 = 0; g4 < BN / 32; g4++) {
                const int r = row + hh * 8, col = n0 + (g4 * 4 + q) * 8;
                res[hh][g4].x = res[hh][g4].y = res[hh][g4].z = res[hh][g4].w = 0u;
                if (residual && r < M && col < N) res[hh][g4] = *(const vec16*)(residual + (i64)r * N + col);
            }
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        #pragma unroll
        for (int i = 0; i < BN / 2; i++) asm volatile("" : ACC_FENCE(acc[i]) :: "memory");
        if (previous >= 0 && lane == 0) mbar_arrive(bars + 8 * (STAGES + previous));

        // Each quad of lanes holds 8 consecutive columns of a row spread over its 4 threads; a transpose by shuffles
        // gives every thread 8 consecutive columns: 16-byte residual loads and stores, one rounding to 16 bit.
        #pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const int r = row + hh * 8;
            #pragma unroll
            for (int g4 = 0; g4 < BN / 32; g4++) {
                float2 mine[4];
                #pragma unroll
                for (int k = 0; k < 4; k++) {
                    const int i = g4 * 4 + k;
                    mine[k] = make_float2((float)acc[i * 4 + hh * 2] * ep[i].x + ep[i].z, (float)acc[i * 4 + hh * 2 + 1] * ep[i].y + ep[i].w);
                }
                float2 received[4];   // received[j]: columns 2·((q + j) & 3) of chunk g4·4 + q
                #pragma unroll
                for (int jj = 0; jj < 4; jj++) {
                    const float2 send = pick4(mine, (q - jj) & 3);
                    const int from = (lane & ~3) | ((q + jj) & 3);
                    received[jj] = make_float2(__shfl_sync(0xffffffffu, send.x, from), __shfl_sync(0xffffffffu, send.y, from));
                }
                const int col = n0 + (g4 * 4 + q) * 8;
                if (r < M && col < N) {
                    float rv[8];
                    unpack8(res[hh][g4], rv);
                    vec16 o;
                    float2 v;
                    v = pick4(received, (0 - q) & 3); o.x = pack_half2(v.x + rv[0], v.y + rv[1]);
                    v = pick4(received, (1 - q) & 3); o.y = pack_half2(v.x + rv[2], v.y + rv[3]);
                    v = pick4(received, (2 - q) & 3); o.z = pack_half2(v.x + rv[4], v.y + rv[5]);
                    v = pick4(received, (3 - q) & 3); o.w = pack_half2(v.x + rv[6], v.y + rv[7]);
                    *(vec16*)(Y + (i64)r * N + col) = o;
                }
            }
        }
    }
}
"""#
}

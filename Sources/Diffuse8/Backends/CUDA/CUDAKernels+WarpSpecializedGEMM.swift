/// Our own 8-bit GEMM for Hopper (sm_90a): y = (x·Wᵀ)·α[j] + bias[j] (+ residual), x and W 8-bit codes (both
/// K-contiguous), INT32 (INT8) or FP32 (FP8) sums on the tensor cores through `wgmma`, the dequantization, bias and
/// residual fused in the epilogue, one rounding to 16 bit.
///
/// Structure (the warp-specialized persistent design of Hopper GEMMs): one producer thread streams 128-byte-deep
/// K slices of x and W with TMA into a ring of shared-memory slots (128-byte swizzle, mbarrier-guarded); two
/// consumer warpgroups multiply with `wgmma.mma_async` straight from shared memory. In the ping-pong variants each
/// consumer takes whole tiles (64 or 128 rows) in turn, so one's epilogue overlaps the other's products; in the
/// cooperative variants both share a 128-row tile. The grid is one block per SM, walking the tiles.
///
/// The epilogue writes each consumer's rows of the tile, rounded to 16 bit, into its own shared-memory buffer (in the
/// 128-byte swizzle, so the quads' 4-byte stores hit 32 distinct banks) and one thread hands it to a TMA store, which
/// drains while the consumer goes on to its next tile. Storing straight from registers to global memory instead made
/// the epilogue 2–4× as long as the products at K ≤ 1280 (measured on H200: 136 vs 75 µs for 8192×640 → 5120).
/// A residual's part of the tile comes into that buffer by TMA while the tile is multiplied, and the epilogue adds it
/// from there. At SDXL's shapes the epilogue takes as long as the products or longer (H200, INT8, the 128×256 tile,
/// timed without its epilogue: Q/K/V at 64² latents 29.9 µs whole, 15.5 µs without), so it is kept free of waits on
/// global memory: shared stores as plain C++ stores (an `asm` store with a "memory" clobber held each column's α/bias
/// load behind the previous column's store; that Q/K/V 29.9 → 24.5 µs), the residual by TMA (`to_out` at 64², the
/// 64×128 tile, 17.4 → 13.5 µs), the tile's α, bias and scales copied into shared memory while it is multiplied
/// (GEGLU at 64², INT8, 84.8 → 80.8 µs). The GEGLU epilogue computes its erf in 15 instructions instead of `erff`'s
/// 27 (`gelu_epilogue`: 80.8 → 71.7 µs); with its codes made by a multiplier per column and `F2IP.S8` pairs, it issues
/// 1481 instructions per thread instead of 2152 (`code_pair`: 72.0 → 63.4 µs). The 64×128 ping-pong tile has 7 ring
/// slots, not the 8 that fit, so that its operands fit too (`to_out` at 64² 13.5 → 12.2 µs, at 32² 12.0 → 10.8 µs).
///
/// The GEGLU variant (`warpSpecializedGEGLU`) loads the rows of both halves of a GEGLU projection into one tile, so
/// each thread holds a value and its gate, and stores a · gelu(g): half the plain GEMM's output.
///
/// Why our own: on Hopper the INT8 GEMMs of cuBLASLt and cuDNN run at about 1.5× the time of the same FP16 GEMM,
/// while the tensor cores multiply INT8 at twice the FP16 rate. Which variant (or library) is fastest depends on
/// the shape; `CUDAKernels.eightBitLinear` times them on first use.
extension CUDAKernels {
    /// One compiled tile shape of the warp-specialized GEMM.
    package struct WarpSpecializedGEMM: Hashable, Sendable, CustomStringConvertible {
        /// Output columns per tile (the `wgmma` N: 64, 128, 160, 192 or 256).
        let columns: Int
        /// Shared-memory slots in the load ring.
        let stages: Int
        /// Consumers take whole tiles in turn (else they share 128-row tiles).
        let pingPong: Bool
        /// Rows of a ping-pong tile, 64 or 128 (one consumer multiplies a 128-row tile as two 64-row `wgmma` blocks).
        var pingPongRows = 64

        /// Rows per tile.
        var rows: Int { pingPong ? pingPongRows : 128 }
        /// Rows each consumer multiplies and stores per tile.
        var consumerRows: Int { pingPong ? pingPongRows : 64 }
        /// Bytes of one ring slot: `rows + columns` rows of 128 code bytes.
        var stageBytes: Int { (rows + columns) * 128 }
        /// Bytes of the two consumers' output buffers (`consumerRows` × `columns` 16-bit values each).
        var outputBytes: Int { 2 * consumerRows * columns * 2 }
        /// Bytes of the two consumers' copies of their tile's epilogue operands: per column, α and bias (8 bytes) and
        /// the scale that rounding or code-writing epilogues read (4 bytes).
        var epilogueBytes: Int { 2 * columns * 12 }
        /// The ring, the output buffers, 1 KB of alignment slack, the mbarriers.
        private var ringAndBuffersBytes: Int { stageBytes * stages + outputBytes + 1024 + 16 * stages + 32 }
        /// Whether the epilogue operands are copied into shared memory while the tile is multiplied: where they fit
        /// beside the ring in sm_90's 227 KB.
        var stagesEpilogue: Bool { ringAndBuffersBytes + epilogueBytes <= 232_448 }
        /// Dynamic shared memory: the ring, the output buffers, the alignment slack, the mbarriers, the epilogue operands.
        var sharedBytes: Int { ringAndBuffersBytes + (stagesEpilogue ? epilogueBytes : 0) }

        package var description: String { "wgmma \(pingPong ? "ping-pong" : "cooperative") \(rows)×\(columns), \(stages) stages" }

        /// The variant as a `CUDATuningRecord` choice, e.g. "wgmma 128 5 cooperative", "wgmma 128 4 ping-pong 128".
        var tuningCode: String {
            "wgmma \(columns) \(stages) \(pingPong ? "ping-pong" : "cooperative")" + (pingPong && pingPongRows != 64 ? " \(pingPongRows)" : "")
        }

        /// The variant a tuning choice names, among those this build has (nil for anything else).
        static func named(tuningCode: String) -> WarpSpecializedGEMM? { variants.first { $0.tuningCode == tuningCode } }

        /// The variants timed per shape (H200, 2026-11-30): the 64×128 ping-pong tile wins most shapes with a residual
        /// and short K, the 64×64 one small outputs (more tiles than SMs), the cooperative 128×256 tile large N at
        /// K ≤ 1280 and long K, the cooperative 128×128 tile large N at 32×32 latents. The 128×192 tile is for outputs
        /// 1280 wide at 2048 rows (SDXL's 32×32 latent level): 16 × 7 = 112 tiles make one wave on 132 SMs, where
        /// 128×128 tiles make 160, a second wave of 28. The 128×160 tile cuts the same outputs into 128 tiles, so
        /// each SM's share is a sixth smaller (INT8 `to_out` at 32² 9.8 → 8.8 µs, FF out 22.8 → 20.0 µs), and 320-,
        /// 640- and 1280-channel convolutions into tiles without padded columns: it won every SDXL 3×3 convolution
        /// (H200, 2026-12-02). Its 16-bit stores go out in 32-column boxes (`outputBoxColumns`). The ping-pong 128×128
        /// tile gives each consumer a whole 128-row tile (two 64-row `wgmma` blocks, as many accumulators as the
        /// 128×256 cooperative tile), so that one consumer's epilogue runs while the other multiplies, on a ring slot of
        /// 32 KB for 2 M products where the 64×256 ping-pong tile (dropped: it lost every GEGLU projection) read 40 KB.
        package static let variants = [WarpSpecializedGEMM(columns: 128, stages: 7, pingPong: true),
                                       WarpSpecializedGEMM(columns: 64, stages: 10, pingPong: true),
                                       WarpSpecializedGEMM(columns: 128, stages: 4, pingPong: true, pingPongRows: 128),
                                       WarpSpecializedGEMM(columns: 128, stages: 5, pingPong: false),
                                       WarpSpecializedGEMM(columns: 160, stages: 5, pingPong: false),
                                       WarpSpecializedGEMM(columns: 192, stages: 4, pingPong: false),
                                       WarpSpecializedGEMM(columns: 256, stages: 3, pingPong: false)]

        /// Whether sums over `depth` products (K: a Linear layer's inputs, a convolution's taps × channels) of `format`
        /// are added to FP32 totals every eight slices (the kernel's `PROMOTE`). FP8 `wgmma` accumulates with fewer
        /// bits than FP32, so its error grows with the depth: on H200, 9.1–9.2e-4 from the simulated layer at
        /// K = 2048 and 1.0e-3 at K = 2880 straight through (the self-test's bar is 1e-3); with totals every eight slices
        /// the convolutions' cases are 4.7–5.7e-4 (every four: 3.4–3.9e-4, 4–6 % slower at SDXL's deep shapes).
        /// Up to 1280 (SDXL's GEGLU projections and self-attention layers; its FF output layers and the context's K/V,
        /// K = 2048, get totals) the sums go straight through: the totals cost registers and, for the convolutions,
        /// 1–13 % of the time.
        package static func promotesSums(_ format: QuantizedFormat, depth: Int) -> Bool { format == .fp8 && depth > 1280 }

        /// The variants that run `format`'s products over `depth`: with FP32 totals beside the accumulators, the
        /// 128×256 tile has no registers left (ptxas: 396 bytes of spills).
        package static func variants(_ format: QuantizedFormat, depth: Int) -> [WarpSpecializedGEMM] {
            promotesSums(format, depth: depth) ? variants.filter(\.holdsTotals) : variants
        }

        /// Whether the consumers' registers hold FP32 totals beside the accumulators (ptxas, sm_90a: none spilled up
        /// to 96 accumulators a thread, 64 rows × 192 columns; 396 bytes at 128, 64 × 256).
        var holdsTotals: Bool { consumerRows / 64 * columns <= 192 }

        /// The variants that can fuse GEGLU over `depth` inputs: their tile's BN/2 outputs fill whole 64-column
        /// store boxes.
        package static func gegluVariants(_ format: QuantizedFormat, depth: Int) -> [WarpSpecializedGEMM] {
            variants(format, depth: depth).filter(\.fusesGEGLU)
        }

        /// Every variant that fuses GEGLU at some depth.
        package static let gegluVariants = variants.filter(\.fusesGEGLU)

        /// Whether the tile can fuse GEGLU: its `columns / 2` outputs fill whole 64-column store boxes.
        var fusesGEGLU: Bool { columns % 128 == 0 }

        /// Code columns per TMA store box where the epilogue writes 8-bit codes, `outputColumns` per tile (the kernel's
        /// CODE_BOX, bytes per box row): the widest of 128, 64 and 32 that divides the tile.
        static func codeBoxColumns(outputColumns: Int) -> Int { [128, 64].first { outputColumns % $0 == 0 } ?? 32 }

        /// 16-bit columns per TMA box of the epilogue's output and residual tiles (the kernel's OUT_BOX): 64 (128-byte
        /// rows, 128-byte swizzle) where they divide the tile, else 32 (64-byte rows, 64-byte swizzle).
        static func outputBoxColumns(outputColumns: Int) -> Int { outputColumns % 64 == 0 ? 64 : 32 }

        /// `outputBoxColumns` of this tile's plain output.
        var outputBoxColumns: Int { Self.outputBoxColumns(outputColumns: columns) }
    }

    /// Whether this card runs the warp-specialized GEMM: `wgmma`/TMA need sm_90a (compute capability 9.0 exactly),
    /// and the driver must encode TMA descriptors.
    package var runsWarpSpecializedGEMM: Bool {
        context.computeCapability == (9, 0) && context.driver.cuTensorMapEncodeTiled != nil
            && WarpSpecializedGEMM.variants.allSatisfy { $0.sharedBytes <= context.maxSharedMemoryPerBlock }
    }

    /// y[rows, n] = (codes[rows, k] · weight[n, k]ᵀ) · α + bias (+ residual) with `variant`. `epilogue` holds
    /// (α[2j], α[2j+1], bias[2j], bias[2j+1]) per column pair (FP32 [n / 2, 4]). With `roundingScales` (FP32 [n]),
    /// each result is then rounded to the FP8 grid of its column's scale (level 4's Q/K/V outputs), from FP32. With
    /// `codeFactors` (FP32 [n + 1], as for `warpSpecializedGEGLU`), y is instead its reader's input codes [rows, n] in
    /// `format`. Requirements (checked by the caller): k and n multiples of 16, every address 16-byte aligned; y 16-bit
    /// [rows, n], or 8-bit with `codeFactors`.
    func warpSpecializedGEMM(_ variant: WarpSpecializedGEMM, format: QuantizedFormat, codes: CUDATensor, rows: Int,
                             weight: CUDATensor, weightMap: CUDATensorMap, epilogue: CUDATensor,
                             residual: CUDATensor?, roundingScales: CUDATensor? = nil, codeFactors: CUDATensor? = nil,
                             y: CUDATensor) throws {
        let (n, k) = (weight.shape[0], weight.shape[1])
        let function = try warpSpecializedFunction(variant, format: format, codesOut: codeFactors != nil, rounding: roundingScales != nil,
                                                   promotes: WarpSpecializedGEMM.promotesSums(format, depth: k))
        let inputMap = try context.tensorMap(codes.address, rows: rows, columns: k, boxRows: variant.rows)
        let outputMap = codeFactors == nil
            ? try sixteenBitOutputMap(y.address, rows: rows, columns: n, boxColumns: variant.outputBoxColumns)
            : try codeOutputMap(y, rows: rows, columns: n, boxColumns: WarpSpecializedGEMM.codeBoxColumns(outputColumns: variant.columns))
        // the residual's tiles, loaded with TMA into the output buffer in the output's layout
        let residualMap = try residual.map { try sixteenBitOutputMap($0.address, rows: rows, columns: n, boxColumns: variant.outputBoxColumns) }
        let tiles = ((rows + variant.rows - 1) / variant.rows) * ((n + variant.columns - 1) / variant.columns)
        try compiler.launch(function, grid: (min(tiles, context.multiprocessorCount), 1, 1), block: (384, 1, 1),
                            sharedBytes: variant.sharedBytes, [
            .tensorMap(inputMap), .tensorMap(weightMap), .tensor(epilogue), .pointer(residual?.address ?? 0),
            .pointer((roundingScales ?? codeFactors)?.address ?? 0), .tensorMap(outputMap), .tensorMap(residualMap ?? outputMap),
            .int(rows), .int(n), .int(k)])
    }

    /// y[rows, n] = a · gelu(g) (diffusers' GEGLU) of the GEGLU projection [2n, k] in one kernel: a and g are the
    /// dequantized products of weight rows j and n + j, each with its α and bias (`epilogue` as above, 2n columns).
    /// With `codeFactors` (FP32 [n + 1]: the reading layer's SmoothQuant factors, ones without, then its input scale),
    /// y is instead that layer's input codes [rows, n] in `format`, rounded from FP32 as the quantize pass rounds.
    /// `weightMap` comes from `warpSpecializedWeightMap(_:_:halves: true)`. Requirements as above; n a multiple of 16.
    func warpSpecializedGEGLU(_ variant: WarpSpecializedGEMM, format: QuantizedFormat, codes: CUDATensor, rows: Int,
                              weight: CUDATensor, weightMap: CUDATensorMap, epilogue: CUDATensor, codeFactors: CUDATensor? = nil,
                              y: CUDATensor) throws {
        let (n, k) = (weight.shape[0] / 2, weight.shape[1])
        let function = try warpSpecializedFunction(variant, format: format, geglu: true, codesOut: codeFactors != nil,
                                                   promotes: WarpSpecializedGEMM.promotesSums(format, depth: k))
        let inputMap = try context.tensorMap(codes.address, rows: rows, columns: k, boxRows: variant.rows)
        let outputMap = codeFactors == nil
            ? try sixteenBitOutputMap(y.address, rows: rows, columns: n,
                                      boxColumns: WarpSpecializedGEMM.outputBoxColumns(outputColumns: variant.columns / 2))
            : try codeOutputMap(y, rows: rows, columns: n, boxColumns: WarpSpecializedGEMM.codeBoxColumns(outputColumns: variant.columns / 2))
        let tiles = ((rows + variant.rows - 1) / variant.rows) * ((n + variant.columns / 2 - 1) / (variant.columns / 2))
        try compiler.launch(function, grid: (min(tiles, context.multiprocessorCount), 1, 1), block: (384, 1, 1),
                            sharedBytes: variant.sharedBytes, [
            .tensorMap(inputMap), .tensorMap(weightMap), .tensor(epilogue), .pointer(0), .pointer(codeFactors?.address ?? 0),
            .tensorMap(outputMap), .tensorMap(outputMap), .int(rows), .int(n), .int(k)])
    }

    /// The TMA map through which the wgmma kernels store a 16-bit y [rows, n] and load a residual (the kernel's OUT_BOX):
    /// boxes of `boxColumns` (64 or 32) values × 64 rows, in the swizzle of their row's width.
    private func sixteenBitOutputMap(_ address: UInt64, rows: Int, columns n: Int, boxColumns: Int) throws -> CUDATensorMap {
        try context.tensorMap(address, extents: [n, rows], box: [boxColumns, 64], elementBytes: 2)
    }

    /// The TMA map through which the wgmma kernels store 8-bit codes y [rows, n] (the kernel's CODE_BOX): boxes of
    /// `boxColumns` codes × 64 rows, in the 128-byte swizzle where a box row is 128 bytes, else packed.
    private func codeOutputMap(_ y: CUDATensor, rows: Int, columns n: Int, boxColumns: Int) throws -> CUDATensorMap {
        try context.tensorMap(y.address, extents: [n, rows], box: [boxColumns, 64], swizzled: boxColumns == 128)
    }

    /// y = conv(x)·α[o] + bias[o] of a stride-1 convolution with an odd `kernelSize` and padding `kernelSize / 2`, as an
    /// implicit GEMM in `variant` (see the kernel's notes): `codes` the channels-last input codes [images, height·width,
    /// c], `weight` the codes [o, kernelSize, kernelSize, c], `epilogue` as for `warpSpecializedGEMM` (o columns), y
    /// 16-bit channels-last [images, height·width, o]. `weightMap` comes from `warpSpecializedConvolutionWeightMap`.
    /// Requirements (checked by the caller): c and o multiples of 16, every address 16-byte aligned.
    func warpSpecializedConvolution(_ variant: WarpSpecializedGEMM, format: QuantizedFormat, codes: CUDATensor, images: Int,
                                    height: Int, width: Int, weight: CUDATensor, weightMap: CUDATensorMap, epilogue: CUDATensor,
                                    y: CUDATensor) throws {
        let (o, kernelSize, c) = (weight.shape[0], weight.shape[1], weight.shape[3])
        let tileWidth = Self.convolutionTileWidth(variant, height: height, width: width)
        let function = try warpSpecializedFunction(variant, format: format, convolutionTileWidth: tileWidth,
                                                   promotes: WarpSpecializedGEMM.promotesSums(format, depth: kernelSize * kernelSize * c))
        let inputMap = try context.tensorMap(codes.address, extents: [c, width, height, images],
                                             box: [128, tileWidth, variant.rows / tileWidth, 1])
        let outputMap = try context.tensorMap(y.address, extents: [o, width, height, images],
                                              box: [variant.outputBoxColumns, tileWidth, 64 / tileWidth, 1], elementBytes: 2)
        let tileRows = variant.rows / tileWidth
        let tiles = images * ((height + tileRows - 1) / tileRows) * ((width + tileWidth - 1) / tileWidth)
            * ((o + variant.columns - 1) / variant.columns)
        try compiler.launch(function, grid: (min(tiles, context.multiprocessorCount), 1, 1), block: (384, 1, 1),
                            sharedBytes: variant.sharedBytes, [
            .tensorMap(inputMap), .tensorMap(weightMap), .tensor(epilogue), .pointer(0), .pointer(0), .tensorMap(outputMap),
            .tensorMap(outputMap), .int(images), .int(o), .int(c), .int(height), .int(width), .int(kernelSize)])
    }

    /// The TMA descriptor of a convolution's weight codes [o, kernelSize, kernelSize, c] for `variant`: boxes of one
    /// tap's 128 channels of `variant.columns` output channels.
    func warpSpecializedConvolutionWeightMap(_ weight: CUDATensor, _ variant: WarpSpecializedGEMM) throws -> CUDATensorMap {
        try context.tensorMap(weight.address, extents: [weight.shape[3], weight.shape[1] * weight.shape[2], weight.shape[0]],
                              box: [128, 1, variant.columns])
    }

    /// The image columns per tile of the implicit-GEMM convolution (8, 16, 32 or 64, so that each consumer's 64 rows
    /// are whole image rows): the one that pads the image least to whole tiles, the widest of those.
    static func convolutionTileWidth(_ variant: WarpSpecializedGEMM, height: Int, width: Int) -> Int {
        func paddedArea(_ tileWidth: Int) -> Int {
            let tileRows = variant.rows / tileWidth
            return (width + tileWidth - 1) / tileWidth * tileWidth * ((height + tileRows - 1) / tileRows * tileRows)
        }
        return [64, 32, 16, 8].min { paddedArea($0) < paddedArea($1) } ?? 64
    }

    /// The FP32 [n / 2, 4] epilogue operands of the wgmma kernels for per-column α (n values, n even) and an optional
    /// bias: (α[2j], α[2j+1], bias[2j], bias[2j+1]) per column pair. The bias is first rounded to the storage type,
    /// as the other paths read it from its 16-bit copy.
    func warpSpecializedEpilogue(alpha: [Float], bias: [Float]?) throws -> CUDATensor {
        let rounded = bias.map { b in
            storageType == .bfloat16 ? b.map { Float(bitPattern: UInt32(CUDADataType.bfloat16Bits($0)) << 16) } : b.map { Float(Float16($0)) }
        }
        var values = [Float](repeating: 0, count: 2 * alpha.count)
        for pair in 0..<alpha.count / 2 {
            values[4 * pair] = alpha[2 * pair]
            values[4 * pair + 1] = alpha[2 * pair + 1]
            values[4 * pair + 2] = rounded?[2 * pair] ?? 0
            values[4 * pair + 3] = rounded?[2 * pair + 1] ?? 0
        }
        return try context.upload(Tensor(shape: [alpha.count / 2, 4], scalars: values), dtype: .float32)
    }

    /// The TMA descriptor of a layer's weight codes for `variant` (made once per layer and variant); with `halves`,
    /// of a GEGLU projection for `warpSpecializedGEGLU` (each box: rows of the first half, then of the second).
    func warpSpecializedWeightMap(_ weight: CUDATensor, _ variant: WarpSpecializedGEMM, halves: Bool = false) throws -> CUDATensorMap {
        try context.tensorMap(weight.address, rows: weight.shape[0], columns: weight.shape[1],
                              boxRows: halves ? variant.columns / 2 : variant.columns, halves: halves)
    }

    /// The kernel of `variant`: plain, with GEGLU, or rounding to FP8 grids (a variant of its own, so that the others
    /// keep their registers: with the rounding compiled into every kernel, the tuner's picks for plain INT8 layers moved
    /// to smaller tiles and SDXL's INT8 GEMMs took 13.9 instead of 10.7 ms).
    private func warpSpecializedFunction(_ variant: WarpSpecializedGEMM, format: QuantizedFormat, geglu: Bool = false,
                                         codesOut: Bool = false, rounding: Bool = false, convolutionTileWidth: Int? = nil,
                                         promotes: Bool) throws -> CUDAFunction {
        guard !promotes || variant.holdsTotals else {
            throw CUDAError.invalidArgument("the \(variant) tile has no registers for FP32 totals")
        }
        guard !codesOut || (!rounding && convolutionTileWidth == nil) else {
            throw CUDAError.invalidArgument("the wgmma GEMM writes codes only from plain or GEGLU products")
        }
        let module = "diffuse8_ws_gemm_\(format == .int8 ? "int8" : "fp8")_\(variant.pingPong ? "pp" : "coop")\(variant.columns)_s\(variant.stages)"
            + (geglu ? "_geglu" : "") + (codesOut ? "_codes" : "") + (rounding ? "_round" : "") + (convolutionTileWidth.map { "_conv\($0)" } ?? "")
            + (promotes ? "_promote" : "")
        let function = try compiler.function("gemm8_ws", module: module, architecture: "sm_90a",
                                             source: Self.warpSpecializedSource(variant, format: format, geglu: geglu, codesOut: codesOut,
                                                                                rounding: rounding,
                                                                                convolutionTileWidth: convolutionTileWidth, promotes: promotes))
        try compiler.allowSharedMemory(function, bytes: variant.sharedBytes)
        return function
    }

    /// Shared-memory addresses and `wgmma` operand descriptors, for the kernels that multiply with `wgmma` (after `u64`
    /// is declared).
    static let sharedMemoryOperands = #"""
__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }
/// wgmma operand descriptor of a K-major tile in the 128-byte swizzle: 8-row atoms 1024 bytes apart.
__device__ __forceinline__ u64 smem_desc(u32 addr) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}

"""#

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

    /// The kernel's source for `variant`: plain or with GEGLU (16-bit out, or with `codesOut` the reader's 8-bit codes in
    /// `format`), or with the FP8 rounding in its epilogue, or, with a
    /// `convolutionTileWidth`, the implicit-GEMM convolution whose tiles are that many image columns wide; with
    /// `promotes` (FP8, see `WarpSpecializedGEMM.promotesSums`), its sums added to FP32 totals every eight 128-deep
    /// slices.
    static func warpSpecializedSource(_ variant: WarpSpecializedGEMM, format: QuantizedFormat, geglu: Bool = false,
                                      codesOut: Bool = false, rounding: Bool = false, convolutionTileWidth: Int? = nil,
                                      promotes: Bool = false) -> String {
        let defines = """
        #define FMT \(format == .int8 ? 0 : 1)
        #define BN \(variant.columns)
        #define STAGES \(variant.stages)
        \(variant.pingPong ? "#define PINGPONG" : "")
        #define CONSUMER_ROWS \(variant.consumerRows)
        \(variant.stagesEpilogue ? "#define EPILOGUE_STAGED" : "")
        \(geglu ? "#define GEGLU" : "")
        #define OUT_BOX \(WarpSpecializedGEMM.outputBoxColumns(outputColumns: geglu ? variant.columns / 2 : variant.columns))
        \(codesOut ? "#define CODES_OUT\n#define CODE_BOX \(WarpSpecializedGEMM.codeBoxColumns(outputColumns: geglu ? variant.columns / 2 : variant.columns))" : "")
        \(rounding ? "#define ROUND_OUTPUT" : "")
        \(convolutionTileWidth.map { "#define CONV_TILE_WIDTH \($0)" } ?? "")
        \(promotes ? "#define PROMOTE\n#define PROMOTE_SLICES 8" : "")

        """
        return CUDAKernelSources.prelude + "\n" + defines + warpSpecializedHead + sharedMemoryOperands
            + wgmmaCall(columns: variant.columns, format: format) + warpSpecializedBody
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
#define BM CONSUMER_ROWS      // each consumer warpgroup takes whole tiles (64 or 128 rows), in turn
#define EMPTY_COUNT 4
#else
#define BM 128                // the two consumer warpgroups share each tile, 64 rows each (CONSUMER_ROWS)
#define EMPTY_COUNT 8
#endif
#define BLOCKS (CONSUMER_ROWS / 64)   // 64-row wgmma blocks per consumer and tile
#define STAGE_BYTES ((BM + BN) * 128)
#ifdef GEGLU
#define OUT_BN (BN / 2)       // output columns per tile: BN/2 values and their BN/2 gates
#else
#define OUT_BN BN
#endif
#define BLOCK_OUT_BYTES (64 * BN * 2)   // one 64-row block's part of a consumer's output buffer
#define OUT_BYTES (2 * BLOCKS * BLOCK_OUT_BYTES)   // the two consumers' output buffers
#define OUT_BOX_BYTES (64 * OUT_BOX * 2)   // one 16-bit TMA box: 64 rows of OUT_BOX values

/// Byte offset of the 16-bit columns 8i…8i+7 of tile row lr in a consumer's output buffer: boxes of 64 rows × OUT_BOX
/// values, each row's 16-byte chunks placed as TMA's 128-byte swizzle (OUT_BOX 64: chunk bits 4–6 ^= offset bits 7–9,
/// the row's low three bits) or 64-byte swizzle (OUT_BOX 32: bits 4–5 ^= bits 7–8, the row's bits 1–2) places them,
/// so that the 8 rows of a warp's stores fall in distinct banks.
__device__ __forceinline__ u32 out_offset(int i, int lr) {
    constexpr int chunks = OUT_BOX / 8;
    const int swizzle = OUT_BOX == 64 ? (lr & 7) : ((lr >> 1) & 3);
    return (i / chunks) * OUT_BOX_BYTES + lr * (OUT_BOX * 2) + (((i % chunks) ^ swizzle) << 4);
}
#if !defined(GEGLU) && !defined(CODES_OUT) && !defined(CONV_TILE_WIDTH)
#define RESIDUAL_TMA          // a residual's tiles are loaded with TMA into the output buffer while the tile is multiplied
#endif
#ifdef CONV_TILE_WIDTH
#define BW CONV_TILE_WIDTH    // image columns per tile (8, 16, 32 or 64: a consumer's 64 rows are whole image rows)
#endif

/// Stores v at shared address `at` of the block's aligned shared memory (`smem`, at shared address `base`) as a plain
/// C++ store. An `asm volatile` store with a "memory" clobber would keep every global load of the epilogue (α, bias,
/// residual) behind the previous column's store: one load latency per column.
template <typename T> __device__ __forceinline__ void store_shared(unsigned char* smem, u32 base, u32 at, T v) {
    *(T*)(smem + (at - base)) = v;
}
template <typename T> __device__ __forceinline__ T load_shared(const unsigned char* smem, u32 base, u32 at) {
    return *(const T*)(smem + (at - base));
}

#define EPI_BYTES (BN * 12)   // one consumer's copy of its tile's epilogue operands (with EPILOGUE_STAGED)

#ifdef EPILOGUE_STAGED
/// 16 bytes from global `src` to shared `dst`, without registers (zeros where !valid); complete after cp.async.wait_all.
__device__ __forceinline__ void copy_async16(u32 dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
/// Starts copying the epilogue operands of the tile at column n0 into a consumer's buffer `staged` (thread t of its
/// 128): the column pairs' (α, α, bias, bias) (with GEGLU the values' pairs, then their gates'), then, where the
/// epilogue rounds or writes codes, the columns' scales, BN·8 bytes in. Columns past N read as zeros. Loaded in the
/// epilogue itself, from L2 (the operands of all of a layer's columns do not stay in the L1 that the ring leaves), they
/// made each column wait on global memory.
__device__ __forceinline__ void stage_epilogue(u32 staged, const float4* epilogue, const float* scales, int n0, int N, int t) {
#ifdef GEGLU
    const int pairs = BN / 4, parts = 2;
#else
    const int pairs = BN / 2, parts = 1;
#endif
    for (int c = t; c < parts * pairs; c += 128) {
        const int part = c / pairs, col = n0 + 2 * (c % pairs);
        copy_async16(staged + c * 16, epilogue + (col < N ? (part * N + col) / 2 : 0), col < N);
    }
#if defined(CODES_OUT) || defined(ROUND_OUTPUT)
    for (int c = t; c < OUT_BN / 4; c += 128) {
        const int col = n0 + 4 * c;
        copy_async16(staged + BN * 8 + c * 16, scales + (col < N ? col : 0), col < N);
    }
#endif
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
#endif

/// The epilogue's (α, α, bias, bias) for layer columns col, col + 1 (pair `pair` of `epilogue`, pair `index` of the
/// tile): from the consumer's copy `staged` where the operands are staged, else from global memory (zeros past N).
__device__ __forceinline__ float4 pair_operands(const unsigned char* smem, u32 base, u32 staged, const float4* epilogue,
                                                int index, int pair, int col, int N) {
#ifdef EPILOGUE_STAGED
    return load_shared<float4>(smem, base, staged + index * 16);
#else
    return col < N ? epilogue[pair] : make_float4(0.f, 0.f, 0.f, 0.f);
#endif
}
/// The scales of layer columns col, col + 1 (tile column `offset`), in the same two forms.
__device__ __forceinline__ float2 column_scales(const unsigned char* smem, u32 base, u32 staged, const float* scales,
                                                int offset, int col, int N) {
#ifdef EPILOGUE_STAGED
    return load_shared<float2>(smem, base, staged + BN * 8 + offset * 4);
#else
    return col < N ? *(const float2*)(scales + col) : make_float2(0.f, 0.f);
#endif
}

#ifdef GEGLU
/// gelu(x) = x·Φ(x) as diffusers' GEGLU computes it (erf, not tanh), with Φ from erfc(|x|/√2) in the form of
/// Abramowitz & Stegun 7.1.26: erfc(a) ≈ t·P(t)·exp(-a²), t = 1 / (1 + 0.3275911 a), |error| ≤ 1.5e-7. Evaluated in
/// FP32 over [-12, 12] against a double-precision erf, the result is within 4.2e-7 of gelu (1.4e-7 of its magnitude
/// where that is above 1): about one FP32 rounding. It takes 15 instructions (two of them MUFU) where `erff` took
/// about 27; with 64 per thread, the GEGLU tiles' epilogue took longer than their products.
__device__ __forceinline__ float gelu_epilogue(float x) {
    float t, e;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(t) : "f"(fmaf(0.3275911f * 0.70710678118654752f, fabsf(x), 1.f)));
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(x * -0.72134752044448170f * x));   // exp(-x²/2)
    // P's coefficients halved: tail = Φ(-|x|) = erfc(|x|/√2) / 2
    const float p = fmaf(fmaf(fmaf(fmaf(0.5307027145f, t, -0.7265760135f), t, 0.7107068705f), t, -0.142248368f), t, 0.127414796f);
    // x·Φ(x) is x·tail below 0 and x·(1 - tail) above: max(x, 0) - |x|·tail in one FMA, without a select
    return fmaf(-fabsf(x), t * p * e, fmaxf(x, 0.f));
}
#endif

/// v rounded to the FP8 E4M3 grid of `scale`, as `fake_quantize` rounds: its code, decoded, times the scale.
__device__ __forceinline__ float fp8_grid(float v, float scale) {
    return decode_code(code_of_quotient(divide_by_scale(v, scale, __frcp_rn(scale)), 1), 1) * scale;
}

#ifdef CODES_OUT
/// The codes of the quotients c0 and c1 (value × SmoothQuant factor / scale, the factor and 1 / scale multiplied
/// per column: within 1.5 ulp of the quotient, where the quantize pass divides exactly) in this kernel's format, one
/// instruction per pair (`codes_of_quotients2`). Dividing and clamping value by value took five times the
/// instructions, and the GEGLU epilogue is bound by the instructions it issues.
__device__ __forceinline__ unsigned short code_pair(float c0, float c1) {
    return (unsigned short)codes_of_quotients2(c0, c1, 0, FMT);
}
/// Stores a code pair at row `row`, column `col` of a consumer's code buffer: boxes of 64 rows × CODE_BOX bytes, one
/// after the other; rows of 128 bytes in the 128-byte swizzle (16-byte chunk bits 4–6 ^= bits 7–9 of the offset), shorter
/// ones packed (a 64-byte box in the 128-byte swizzle is not laid out that way). With 128-byte rows, bits 7–9 of the
/// offset are the row's low three bits, so the swizzle is col ^ (row & 7) << 4: one operation per column.
__device__ __forceinline__ void store_code_pair(unsigned char* smem, u32 base, u32 out, int row, int col, unsigned short pair) {
    const u32 swizzle = CODE_BOX == 128 ? (row & 7) << 4 : 0;
    store_shared(smem, base, out + (col / CODE_BOX) * (64 * CODE_BOX) + row * CODE_BOX + ((col % CODE_BOX) ^ swizzle), pair);
}
#endif

/// Ties every accumulator register to this point, so that the compiler keeps its reads and writes on their side of
/// the asynchronous `wgmma` (which reads and writes them without the compiler seeing it).
__device__ __forceinline__ void fence_accumulators(ACC (&acc)[BLOCKS][BN / 2]) {
    #pragma unroll
    for (int h = 0; h < BLOCKS; h++)
        #pragma unroll
        for (int i = 0; i < BN / 2; i++) asm volatile("" : ACC_FENCE(acc[h][i]) :: "memory");
}

/// A `CUtensorMap` passed by value.
struct __align__(64) TensorMap { u64 v[16]; };

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
/// Three- and four-dimensional boxes: both halves of a GEGLU projection's rows (`CUDAContext.tensorMap(halves:)`, z = 0),
/// a convolution's weight [N, taps, C] and its channels-last image batch [images, H, W, C].
__device__ __forceinline__ void tma_load_3d(u32 dst, const TensorMap* map, int x, int y, int z, u32 bar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n"
                 :: "r"(dst), "l"((u64)map), "r"(x), "r"(y), "r"(z), "r"(bar) : "memory");
}
__device__ __forceinline__ void tma_load_4d(u32 dst, const TensorMap* map, int x, int y, int z, int w, u32 bar) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n"
                 :: "r"(dst), "l"((u64)map), "r"(x), "r"(y), "r"(z), "r"(w), "r"(bar) : "memory");
}

// Y[M, N] = (A[M, K] · B[N, K]ᵀ) · α + bias (+ residual), stored 16-bit through y_map (TMA, OUT_BOX × 64 boxes;
// stores outside Y are dropped). A, B: 8-bit codes read through the tensor maps (zero outside the matrices).
// epilogue[j / 2] = (α[j], α[j + 1], bias[j], bias[j + 1]) for even j. With ROUND_OUTPUT defined, each Y[i, j] is then
// rounded to the FP8 E4M3 grid of scale round_scales[j] (from FP32, before the 16-bit store). With GEGLU defined, B is
// [2N, K] (read through a halves map) and Y[M, N] = a · gelu_epilogue(g) with a, g the dequantized products of B's rows j
// and N + j. With CODES_OUT defined (plain or GEGLU, not with ROUND_OUTPUT), Y is instead the 8-bit codes [M, N] of the
// layer or attention that reads it, in this kernel's format: code(Y[i, j] · s[j] / scale) from FP32, as the quantize
// pass rounds, with round_scales = (s[0…N-1], scale), s that reader's SmoothQuant factors (ones without), stored through
// y_map (8-bit, boxes of CODE_BOX columns × 64 rows; in the 128-byte swizzle where those are 128 bytes, else packed).
// With CONV_TILE_WIDTH defined, an implicit-GEMM convolution (stride 1, odd kernel size KS, padding KS / 2):
// A is the channels-last image batch [M images, H, W, K channels] (a 4-D map: box 128 channels × BW columns × BM / BW
// rows × 1), B the weight [N, KS·KS taps, K] (a 3-D map: box 128 channels × 1 tap × BN), Y [M, H, W, N] (a 4-D map:
// box OUT_BOX channels × BW × 64 / BW × 1). A tile is BM pixels (BM / BW rows of BW columns of one image) × BN channels;
// its K loop runs over the taps and, per tap, 128-channel slices of the image shifted by the tap, whose pixels
// outside the image TMA reads as zeros: the padding.
extern "C" __global__ void __launch_bounds__(384, 1) gemm8_ws(
        const __grid_constant__ TensorMap a_map, const __grid_constant__ TensorMap b_map, const float4* __restrict__ epilogue,
        const half_t* __restrict__ residual, const float* __restrict__ round_scales, const __grid_constant__ TensorMap y_map,
        const __grid_constant__ TensorMap r_map, int M, int N, int K
#ifdef CONV_TILE_WIDTH
        , int H, int W, int KS
#endif
        ) {
    extern __shared__ unsigned char smem_raw[];
    const u32 base = (smem_addr(smem_raw) + 1023) & ~1023u;
    unsigned char* const smem = smem_raw + (base - smem_addr(smem_raw));
    // the ring at base, consumer c's output buffer at base + STAGES·STAGE_BYTES + c·64·BN·2, then the mbarriers:
    // full[s] at bars + 8 s, empty[s] at bars + 8 (STAGES + s), the ping-pong turn of consumer c at bars + 8 (2 STAGES + c),
    // consumer c's residual tile at bars + 8 (2 STAGES + 2 + c); with EPILOGUE_STAGED, consumer c's epilogue operands
    // at bars + 16 STAGES + 32 + c·EPI_BYTES
    const u32 bars = base + STAGES * STAGE_BYTES + OUT_BYTES;
    const int tid = threadIdx.x, wg = tid >> 7;
#ifdef CONV_TILE_WIDTH
    const int tilesX = (W + BW - 1) / BW, tilesY = (H + BM / BW - 1) / (BM / BW), slices = (K + 127) >> 7;
    const int tilesM = M * tilesY * tilesX, KT = KS * KS * slices;
#else
    const int tilesM = (M + BM - 1) / BM, KT = (K + 127) >> 7;
#endif
    const int tilesN = (N + OUT_BN - 1) / OUT_BN, tiles = tilesM * tilesN;
    if (tid == 0) {
        for (int s = 0; s < STAGES; s++) { mbar_init(bars + 8 * s, 1); mbar_init(bars + 8 * (STAGES + s), EMPTY_COUNT); }
        for (int c = 0; c < 2; c++) { mbar_init(bars + 8 * (2 * STAGES + c), 128); mbar_init(bars + 8 * (2 * STAGES + 2 + c), 1); }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        for (const TensorMap* map : {&a_map, &b_map, &y_map, &r_map}) asm volatile("prefetch.tensormap [%0];\n" :: "l"(map) : "memory");
    }
    __syncthreads();
    D8_AFTER_PREVIOUS_KERNEL();   // the barriers' set-up above overlaps the previous kernel's tail

    if (wg == 2) {   // producer warpgroup: one thread issues the loads, in the consumers' order
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (tid == 256) {
            int s = 0; u32 phase = 0;
            for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
                const int mt = t / tilesN, n0 = (t % tilesN) * OUT_BN;
#ifdef CONV_TILE_WIDTH
                const int image = mt / (tilesY * tilesX), y0 = (mt / tilesX) % tilesY * (BM / BW), x0 = mt % tilesX * BW;
#endif
                for (int kt = 0; kt < KT; kt++) {
                    mbar_wait(bars + 8 * (STAGES + s), phase ^ 1);
                    const u32 full = bars + 8 * s, slot = base + s * STAGE_BYTES;
                    mbar_expect(full, STAGE_BYTES);
#if defined(CONV_TILE_WIDTH)
                    const int tap = kt / slices, c0 = (kt - tap * slices) * 128, dy = tap / KS, dx = tap - dy * KS;
                    tma_load_4d(slot, &a_map, c0, x0 + dx - KS / 2, y0 + dy - KS / 2, image, full);
                    tma_load_3d(slot + BM * 128, &b_map, c0, tap, n0, full);
#elif defined(GEGLU)
                    tma_load(slot, &a_map, kt * 128, mt * BM, full);
                    tma_load_3d(slot + BM * 128, &b_map, kt * 128, n0, 0, full);
#else
                    tma_load(slot, &a_map, kt * 128, mt * BM, full);
                    tma_load(slot + BM * 128, &b_map, kt * 128, n0, full);
#endif
                    if (++s == STAGES) { s = 0; phase ^= 1; }
                }
            }
        }
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int warp = (tid >> 5) & 3, lane = tid & 31, q = lane & 3;
    const u32 staged = bars + 16 * STAGES + 32 + wg * EPI_BYTES;   // this consumer's copy of its tile's epilogue operands
#ifdef CODES_OUT
    const float code_r = __frcp_rn(round_scales[N]);
#endif
    ACC acc[BLOCKS][BN / 2];   // per 64-row block of this consumer's rows
#ifdef PROMOTE
    float total[BLOCKS][BN / 2];
#endif
#ifdef PINGPONG
    const int firstTile = blockIdx.x + wg * gridDim.x, tileStep = 2 * gridDim.x, aRows = 0;
#else
    const int firstTile = blockIdx.x, tileStep = gridDim.x, aRows = wg * 64;
#endif
    for (int t = firstTile; t < tiles; t += tileStep) {
        const int mt = t / tilesN, n0 = (t % tilesN) * OUT_BN;
#ifdef CONV_TILE_WIDTH
        const int image = mt / (tilesY * tilesX), y0 = (mt / tilesX) % tilesY * (BM / BW), x0 = mt % tilesX * BW, m0 = 0;
#else
        const int m0 = mt * BM;
#endif
        const int j = (t - blockIdx.x) / gridDim.x, p0 = j * KT;   // this tile's first slot in the load sequence
#ifdef EPILOGUE_STAGED
        stage_epilogue(staged, epilogue, round_scales, n0, N, tid & 127);   // the buffer's last reader passed the bar.sync
#endif
#ifdef RESIDUAL_TMA
        // The residual's part of this consumer's tile is loaded into its output buffer (in the layout the epilogue
        // writes) once the previous tile's store has read that buffer, and arrives while the tile is multiplied. Each
        // thread's own loads of its columns, in the epilogue, made that epilogue wait on global memory once per column.
#ifdef PINGPONG
        const int residualPhase = (j >> 1) & 1;
#else
        const int residualPhase = j & 1;
#endif
        if (residual && (tid & 127) == 0) {
            asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
            const u32 bar = bars + 8 * (2 * STAGES + 2 + wg), buffer = base + STAGES * STAGE_BYTES + wg * (BLOCKS * BLOCK_OUT_BYTES);
            const int boxes = min(OUT_BN / OUT_BOX, (N - n0 + OUT_BOX - 1) / OUT_BOX);
            mbar_expect(bar, BLOCKS * boxes * OUT_BOX_BYTES);
            for (int h = 0; h < BLOCKS; h++)
                for (int b = 0; b < boxes; b++)
                    tma_load(buffer + h * BLOCK_OUT_BYTES + b * OUT_BOX_BYTES, &r_map, n0 + b * OUT_BOX, m0 + aRows + h * 64, bar);
        }
#endif
#ifdef PINGPONG
        // The consumers' main loops take turns in tile order, so that no consumer waits on a slot a whole ring ahead
        // of the loads (an mbarrier's parity cannot tell those phases apart).
        if (j > 0) mbar_wait(bars + 8 * (2 * STAGES + (1 - wg)), ((j - 2 + wg) >> 1) & 1);
#endif
        #pragma unroll
        for (int h = 0; h < BLOCKS; h++)
            #pragma unroll
            for (int i = 0; i < BN / 2; i++) acc[h][i] = 0;
#ifdef PROMOTE
        #pragma unroll
        for (int h = 0; h < BLOCKS; h++)
            #pragma unroll
            for (int i = 0; i < BN / 2; i++) total[h][i] = 0.f;
#endif
        int previous = -1;
        for (int kt = 0; kt < KT; kt++) {
            const int s = (p0 + kt) % STAGES;
            mbar_wait(bars + 8 * s, ((p0 + kt) / STAGES) & 1);
            const u32 slot = base + s * STAGE_BYTES;
            fence_accumulators(acc);
            asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
            #pragma unroll
            for (int kk = 0; kk < 4; kk++)
                #pragma unroll
                for (int h = 0; h < BLOCKS; h++)
                    wgmma_tile(acc[h], smem_desc(slot + (aRows + h * 64) * 128 + kk * 32), smem_desc(slot + BM * 128 + kk * 32));
            asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#ifdef PROMOTE
            // FP8 wgmma adds its products into the accumulator with fewer bits than FP32, so the error grows with K
            // (on H200, 1.0e-3 from the simulated layer at K = 2880 without totals, 4.8e-4 with them; cuDNN 2.4e-4).
            // Every PROMOTE_SLICES slices (1024 deep) the sums are added to FP32 totals and the accumulator starts from
            // zero again (two-level accumulation, as cuBLASLt does without its fast-accumulation mode). That waits for
            // the products, so not after every slice.
            if (kt % PROMOTE_SLICES == PROMOTE_SLICES - 1 || kt == KT - 1) {
                asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
                fence_accumulators(acc);
                if (lane == 0) {
                    if (previous >= 0) mbar_arrive(bars + 8 * (STAGES + previous));
                    mbar_arrive(bars + 8 * (STAGES + s));
                }
                previous = -1;
                #pragma unroll
                for (int h = 0; h < BLOCKS; h++)
                    #pragma unroll
                    for (int i = 0; i < BN / 2; i++) { total[h][i] += acc[h][i]; acc[h][i] = 0.f; }
                continue;
            }
#endif
            // the previous slot's products are done: hand it back to the producer
            asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
            if (previous >= 0 && lane == 0) mbar_arrive(bars + 8 * (STAGES + previous));
            previous = s;
        }
#ifdef PINGPONG
        mbar_arrive(bars + 8 * (2 * STAGES + wg));
#endif
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        fence_accumulators(acc);
        if (previous >= 0 && lane == 0) mbar_arrive(bars + 8 * (STAGES + previous));
#ifdef PROMOTE
        #pragma unroll
        for (int h = 0; h < BLOCKS; h++)
            #pragma unroll
            for (int i = 0; i < BN / 2; i++) acc[h][i] = total[h][i];
#endif

        // Epilogue: each thread's column pairs, α, bias and residual in FP32, one rounding to 16 bit, into this
        // consumer's buffer (per 64-row block, boxes of 64 rows × OUT_BOX columns, 16-byte chunks swizzled by row);
        // then one thread stores the tile with TMA. The buffer is reused only after that store has read it.
        const u32 out = base + STAGES * STAGE_BYTES + wg * (BLOCKS * BLOCK_OUT_BYTES);
        const int local = warp * 16 + (lane >> 2);
        [[maybe_unused]] const int row = m0 + aRows + local;   // read only by the residual's loads without TMA
        if ((tid & 127) == 0) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#ifdef EPILOGUE_STAGED
        asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
        asm volatile("bar.sync %0, 128;\n" :: "r"(1 + wg) : "memory");
#ifdef RESIDUAL_TMA
        if (residual) mbar_wait(bars + 8 * (2 * STAGES + 2 + wg), residualPhase);
#endif
#ifdef GEGLU
        // The tile's first BN/2 columns are the values a, the last BN/2 their gates g (weight rows N + col), so
        // each thread holds both of its columns' a and g: out = a · gelu(g), 16-bit, or with CODES_OUT its code.
        #pragma unroll
        for (int i = 0; i < BN / 16; i++) {
            const int col = n0 + i * 8 + 2 * q;
            const float4 ea = pair_operands(smem, base, staged, epilogue, i * 4 + q, col >> 1, col, N);
            const float4 eg = pair_operands(smem, base, staged, epilogue, BN / 4 + i * 4 + q, (N + col) >> 1, col, N);
#ifdef CODES_OUT
            const float2 sm = column_scales(smem, base, staged, round_scales, i * 8 + 2 * q, col, N);
            const float f0 = sm.x * code_r, f1 = sm.y * code_r;
#endif
            #pragma unroll
            for (int h = 0; h < BLOCKS * 2; h++) {
                const int blk = h >> 1, hh = h & 1, lr = local + hh * 8, a = i * 4 + hh * 2, g = (i + BN / 16) * 4 + hh * 2;
                const float v0 = ((float)acc[blk][a] * ea.x + ea.z) * gelu_epilogue((float)acc[blk][g] * eg.x + eg.z);
                const float v1 = ((float)acc[blk][a + 1] * ea.y + ea.w) * gelu_epilogue((float)acc[blk][g + 1] * eg.y + eg.w);
#ifdef CODES_OUT
                store_code_pair(smem, base, out + blk * BLOCK_OUT_BYTES, lr, i * 8 + 2 * q, code_pair(v0 * f0, v1 * f1));
#else
                store_shared(smem, base, out + blk * BLOCK_OUT_BYTES + out_offset(i, lr) + q * 4, pack_half2(v0, v1));
#endif
            }
        }
#else
        #pragma unroll
        for (int i = 0; i < BN / 8; i++) {
            const int col = n0 + i * 8 + 2 * q;
            const float4 e = pair_operands(smem, base, staged, epilogue, i * 4 + q, col >> 1, col, N);
#ifdef CODES_OUT
            const float2 sm = column_scales(smem, base, staged, round_scales, i * 8 + 2 * q, col, N);
            const float f0 = sm.x * code_r, f1 = sm.y * code_r;
#endif
            #pragma unroll
            for (int h = 0; h < BLOCKS * 2; h++) {
                const int blk = h >> 1, hh = h & 1, lr = local + hh * 8;
                float v0 = (float)acc[blk][i * 4 + hh * 2] * e.x + e.z, v1 = (float)acc[blk][i * 4 + hh * 2 + 1] * e.y + e.w;
#ifndef CODES_OUT
                const u32 at = out + blk * BLOCK_OUT_BYTES + out_offset(i, lr) + q * 4;
#endif
#ifdef RESIDUAL_TMA
                if (residual) {   // rows past M were read as zeros; columns past N are not stored
                    float r0, r1;
                    unpack2(*(const u32*)(smem + (at - base)), r0, r1);
                    v0 += r0; v1 += r1;
                }
#else
                const int r = row + blk * 64 + hh * 8;
                if (residual && r < M && col < N) {
                    float r0, r1;
                    unpack2(*(const u32*)(residual + (i64)r * N + col), r0, r1);
                    v0 += r0; v1 += r1;
                }
#endif
#ifdef ROUND_OUTPUT
                if (col < N) {
                    const float2 s = column_scales(smem, base, staged, round_scales, i * 8 + 2 * q, col, N);
                    v0 = fp8_grid(v0, s.x); v1 = fp8_grid(v1, s.y);
                }
#endif
#ifdef CODES_OUT
                store_code_pair(smem, base, out + blk * BLOCK_OUT_BYTES, lr, i * 8 + 2 * q, code_pair(v0 * f0, v1 * f1));
#else
                store_shared(smem, base, at, pack_half2(v0, v1));
#endif
            }
        }
#endif
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");   // make the buffer visible to TMA
        asm volatile("bar.sync %0, 128;\n" :: "r"(1 + wg) : "memory");
        if ((tid & 127) == 0) {
            #pragma unroll
            for (int blk = 0; blk < BLOCKS; blk++) {
                const u32 block_out = out + blk * BLOCK_OUT_BYTES;
                const int block_row = aRows + blk * 64;   // the block's first row in the tile
#ifdef CODES_OUT
                #pragma unroll
                for (int b = 0; b < OUT_BN / CODE_BOX; b++)
                    if (n0 + b * CODE_BOX < N)
                        asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n"
                                     :: "l"((u64)&y_map), "r"(n0 + b * CODE_BOX), "r"(m0 + block_row), "r"(block_out + b * 64 * CODE_BOX)
                                     : "memory");
#else
                #pragma unroll
                for (int b = 0; b < OUT_BN / OUT_BOX; b++)
                    if (n0 + b * OUT_BOX < N)
#ifdef CONV_TILE_WIDTH
                        asm volatile("cp.async.bulk.tensor.4d.global.shared::cta.bulk_group [%0, {%1, %2, %3, %4}], [%5];\n"
                                     :: "l"((u64)&y_map), "r"(n0 + b * OUT_BOX), "r"(x0), "r"(y0 + block_row / BW), "r"(image),
                                        "r"(block_out + b * OUT_BOX_BYTES)
                                     : "memory");
#else
                        asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];\n"
                                     :: "l"((u64)&y_map), "r"(n0 + b * OUT_BOX), "r"(m0 + block_row), "r"(block_out + b * OUT_BOX_BYTES)
                                     : "memory");
#endif
#endif
            }
            asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
        }
    }
    // the stores must be complete before the block's shared memory goes away
    if ((tid & 127) == 0) asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}
"""#
}

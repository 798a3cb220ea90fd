#if canImport(Glibc)
import Glibc
#endif

/// FP16 GEMMs through cuBLASLt (FP32 accumulation and scaling), with the bias / GELU epilogues.
///
/// cuBLASLt is column-major; a row-major [r, c] matrix is the column-major [c, r] matrix, so every
/// row-major product here is issued as its transpose. Descriptors, layouts and the algorithm (the fastest of
/// the heuristic's candidates, timed on the first call) are cached per shape, so a repeated GEMM costs one
/// `cublasLtMatmul` call.
/// 8-bit products (`Precision`): FP8 E4M3 operands with per-tensor FP32 scales, FP32 accumulation and a 16-bit
/// output (bias and residual epilogues as in 16 bit); INT8 operands with an INT32 output (cuBLASLt has no INT8
/// epilogues: `CUDAKernels.dequantizeAccumulators` applies scales, bias and residual). Both need the "TN" form,
/// which the row-major linear layers give: A = W [out, in] transposed, B = x [rows, in].
/// Limitations: cuBLASLt's GELU epilogue is the tanh approximation (diffusers' exact-erf GELU goes through
/// `CUDAKernels.gelu`/`geglu`).
public final class CUDAMatmul: @unchecked Sendable {
    /// Epilogues fused into the GEMM.
    public enum Epilogue: Sendable, Hashable {
        case none, bias, gelu, biasGELU

        var code: Int32 {
            switch self {
            case .none: return CUBLASLtAPI.epilogueDefault
            case .bias: return CUBLASLtAPI.epilogueBias
            case .gelu: return CUBLASLtAPI.epilogueGELU
            case .biasGELU: return CUBLASLtAPI.epilogueGELUBias
            }
        }
    }

    /// The operand types of a product.
    enum Precision: Sendable, Hashable {
        /// A, B and D of the context's 16-bit storage type.
        case storage
        /// A and B FP8 E4M3 with scale pointers, D 16-bit.
        case fp8
        /// A and B INT8, D INT32 (exact integer sums).
        case int8
    }

    /// Column-major problem: D[m, n] = op(A)·op(B), all FP16, batch matrices at fixed strides.
    struct Problem: Hashable {
        var m: Int, n: Int, k: Int
        var transA: Bool, transB: Bool
        var lda: Int, ldb: Int, ldd: Int
        var epilogue: Epilogue
        var batch: Int = 1
        var strideA: Int = 0, strideB: Int = 0, strideD: Int = 0
        /// A, B and D's type: the context's storage type, filled in by `run`.
        var dataType = CUDADataType.float16
        /// Scales op(A)·op(B) in FP32 before the epilogue (e.g. attention's 1/√d, so FP16 logits cannot overflow).
        var alpha: Float = 1
        var precision = Precision.storage
    }

    final class Plan {
        let api: CUBLASLtAPI
        var descriptor: OpaquePointer? = nil
        var layoutA: OpaquePointer? = nil, layoutB: OpaquePointer? = nil, layoutD: OpaquePointer? = nil
        var algorithm = [UInt8](repeating: 0, count: CUBLASLtAPI.heuristicResultSize)
        init(api: CUBLASLtAPI) { self.api = api }
        deinit {
            _ = api.cublasLtMatrixLayoutDestroy(layoutA)
            _ = api.cublasLtMatrixLayoutDestroy(layoutB)
            _ = api.cublasLtMatrixLayoutDestroy(layoutD)
            _ = api.cublasLtMatmulDescDestroy(descriptor)
        }
    }

    let context: CUDAContext
    let api: CUBLASLtAPI
    let handle: OpaquePointer?
    let workspace: CUDABuffer
    private var plans: [Problem: Plan] = [:]
    private let lock = CUDALock()

    /// cuBLASLt workspace: 32 MiB, what NVIDIA recommends for Hopper.
    static let workspaceBytes = 32 << 20

    /// The 16-bit type of the operands.
    let storageType: CUDADataType

    init(context: CUDAContext, storageType: CUDADataType) throws {
        self.storageType = storageType
        self.context = context
        api = try context.cublasLt()
        var handle: OpaquePointer? = nil
        try api.check(api.cublasLtCreate(&handle), "cublasLtCreate")
        self.handle = handle
        workspace = try context.allocate(bytes: Self.workspaceBytes)
    }

    /// Whether a new shape times cuBLASLt's top heuristic candidates (up to `autotuneCandidates`) on its first call
    /// and keeps the fastest; otherwise the heuristic's first choice is used. The heuristic's first pick is not the
    /// fastest for a fair share of the UNet's shapes. `DIFFUSE8_GEMM_AUTOTUNE=0` turns it off (for comparisons).
    public var autotunes = getenv("DIFFUSE8_GEMM_AUTOTUNE").map { String(cString: $0) != "0" } ?? true
    static let autotuneCandidates = 8

    /// Queues D = α·op(A)·op(B) (+ bias over D's rows, + GELU) (+ C when `c` is given: β = 1) on the context's stream.
    /// FP8 products take `scales`: device addresses of A's and B's FP32 dequantization scales.
    func run(_ problem: Problem, a: UInt64, b: UInt64, d: UInt64, bias: UInt64? = nil, c: UInt64? = nil,
             scales: (a: UInt64, b: UInt64)? = nil) throws {
        var problem = problem
        problem.dataType = storageType
        guard (problem.precision == .fp8) == (scales != nil), problem.precision != .int8 || (bias == nil && c == nil) else {
            throw CUDAError.invalidArgument("CUDAMatmul: \(problem.precision) product with scales \(scales != nil), bias \(bias != nil), C \(c != nil)")
        }
        let operands: Operands = (a, b, d, bias, c, scales)
        let plan = try lock.withLock { try plans[problem] ?? makePlan(problem, operands: operands) }
        try setPointers(plan, operands)
        try launch(plan.algorithm, plan, problem, operands)
    }

    /// The per-call device pointers a plan's descriptor holds: bias and FP8 scales.
    private func setPointers(_ plan: Plan, _ o: Operands) throws {
        if let bias = o.bias {
            var pointer = bias
            try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descBiasPointer, &pointer, 8),
                          "cublasLtMatmulDescSetAttribute(BIAS_POINTER)")
        }
        if let scales = o.scales {
            var a = scales.a, b = scales.b
            try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descAScalePointer, &a, 8), "set A_SCALE_POINTER")
            try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descBScalePointer, &b, 8), "set B_SCALE_POINTER")
        }
    }

    /// One `cublasLtMatmul` with `algorithm` (a heuristic result, whose first bytes are the algorithm).
    private func launch(_ algorithm: [UInt8], _ plan: Plan, _ problem: Problem, _ o: Operands) throws {
        // α and β are FP32, or INT32 for INT8 products (α = 1, β = 0: the INT32 sums themselves).
        var alpha: UInt32 = problem.precision == .int8 ? 1 : problem.alpha.bitPattern
        var beta: UInt32 = o.c == nil ? 0 : Float(1).bitPattern
        try context.makeCurrent()
        let status = algorithm.withUnsafeBytes { algo in
            api.cublasLtMatmul(handle, plan.descriptor, &alpha, o.a, plan.layoutA, o.b, plan.layoutB, &beta, o.c ?? o.d, plan.layoutD,
                               o.d, plan.layoutD, algo.baseAddress, workspace.address, Self.workspaceBytes,
                               context.stream.handle)
        }
        try api.check(status, "cublasLtMatmul", "problem \(problem)")
    }

    /// The operand addresses of the first call of a shape, used to time candidate algorithms.
    typealias Operands = (a: UInt64, b: UInt64, d: UInt64, bias: UInt64?, c: UInt64?, scales: (a: UInt64, b: UInt64)?)

    private func makePlan(_ p: Problem, operands: Operands) throws -> Plan {
        let plan = Plan(api: api)
        let integer = p.precision == .int8
        try api.check(api.cublasLtMatmulDescCreate(&plan.descriptor, integer ? CUBLASLtAPI.computeInt32 : CUBLASLtAPI.computeFloat32,
                                                   integer ? CUBLASLtAPI.dataInt32 : CUBLASLtAPI.dataFloat32),
                      "cublasLtMatmulDescCreate")
        var transA: Int32 = p.transA ? 1 : 0, transB: Int32 = p.transB ? 1 : 0, epilogue = p.epilogue.code
        try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descTransA, &transA, 4), "set TRANSA")
        try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descTransB, &transB, 4), "set TRANSB")
        try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descEpilogue, &epilogue, 4), "set EPILOGUE")
        let storage = p.dataType == .bfloat16 ? CUBLASLtAPI.dataBFloat16 : CUBLASLtAPI.dataFloat16
        let operandType: Int32 = switch p.precision {
        case .storage: storage
        case .fp8: CUBLASLtAPI.dataFloat8E4M3
        case .int8: CUBLASLtAPI.dataInt8
        }
        func layout(_ rows: Int, _ cols: Int, _ ld: Int, _ stride: Int, output: Bool = false) throws -> OpaquePointer? {
            var l: OpaquePointer? = nil
            let type = !output ? operandType : integer ? CUBLASLtAPI.dataInt32 : storage
            try api.check(api.cublasLtMatrixLayoutCreate(&l, type, UInt64(rows), UInt64(cols), Int64(ld)),
                          "cublasLtMatrixLayoutCreate(\(rows)x\(cols), ld \(ld))")
            if p.batch > 1 {
                var count = Int32(p.batch), offset = Int64(stride)
                try api.check(api.cublasLtMatrixLayoutSetAttribute(l, CUBLASLtAPI.layoutBatchCount, &count, 4), "set BATCH_COUNT")
                try api.check(api.cublasLtMatrixLayoutSetAttribute(l, CUBLASLtAPI.layoutBatchStride, &offset, 8), "set BATCH_OFFSET")
            }
            return l
        }
        plan.layoutA = try p.transA ? layout(p.k, p.m, p.lda, p.strideA) : layout(p.m, p.k, p.lda, p.strideA)
        plan.layoutB = try p.transB ? layout(p.n, p.k, p.ldb, p.strideB) : layout(p.k, p.n, p.ldb, p.strideB)
        plan.layoutD = try layout(p.m, p.n, p.ldd, p.strideD, output: true)

        var preference: OpaquePointer? = nil
        try api.check(api.cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate")
        defer { _ = api.cublasLtMatmulPreferenceDestroy(preference) }
        var workspaceLimit = UInt64(Self.workspaceBytes)
        try api.check(api.cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLtAPI.preferenceMaxWorkspace, &workspaceLimit, 8),
                      "set MAX_WORKSPACE_BYTES")
        if p.epilogue == .bias || p.epilogue == .biasGELU {
            // The heuristic looks at the bias pointer's alignment; any 256-byte aligned address stands in.
            var pointer = workspace.address
            try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descBiasPointer, &pointer, 8), "set BIAS")
        }
        // Autotuning times candidates on the call's buffers, so not where D is also C (the sums would add up), and
        // not inside a capture; a choice recorded by an earlier run (`CUDATuningRecord`) is used inside one too.
        let capturing = context.allocator.isCapturing
        let tunes = autotunes && operands.c != operands.d
        let key = Self.tuningKey(p, accumulates: operands.c != nil)
        let wanted = tunes ? Self.autotuneCandidates : 1
        var results = [UInt8](repeating: 0, count: wanted * CUBLASLtAPI.heuristicResultSize)
        var found: Int32 = 0
        let status = results.withUnsafeMutableBytes {
            api.cublasLtMatmulAlgoGetHeuristic(handle, plan.descriptor, plan.layoutA, plan.layoutB, plan.layoutD, plan.layoutD,
                                               preference, Int32(wanted), $0.baseAddress!, &found)
        }
        try api.check(status, "cublasLtMatmulAlgoGetHeuristic", "problem \(p)")
        guard found > 0 else {
            throw CUDAError.cublas(call: "cublasLtMatmulAlgoGetHeuristic", status: 15, detail: "no algorithm for \(p)")
        }
        func candidate(_ i: Int) -> [UInt8] {
            Array(results[(i * CUBLASLtAPI.heuristicResultSize)..<((i + 1) * CUBLASLtAPI.heuristicResultSize)])
        }
        plan.algorithm = candidate(0)
        // The candidate an earlier run timed fastest (the same `cublasLtMatmulAlgo_t`), if the heuristic still offers it
        // and it runs.
        func runs(_ index: Int) -> Bool {
            do {
                try setPointers(plan, operands)
                try launch(candidate(index), plan, p, operands)
                return true
            } catch {
                return false
            }
        }
        if tunes, found > 1, let index = context.tuning.useHint(key, accept: { hint in
            Self.algorithm(hint).flatMap { algorithm in (0..<Int(found)).first { Self.algorithmBytes(candidate($0)) == algorithm } }
                .flatMap { capturing || runs($0) ? $0 : nil }
        }) {
            plan.algorithm = candidate(index)
            plans[p] = plan
            return plan
        }
        if found > 1 && !capturing {
            try setPointers(plan, operands)
            var best = (index: 0, milliseconds: Double.infinity)
            for i in 0..<Int(found) {
                let algorithm = candidate(i)
                // A candidate that fails to run (rare: heuristic results are meant to be valid) is skipped.
                guard let ms = try? CUDABenchmark.time(context, warmup: 1, repeats: 3, {
                    try launch(algorithm, plan, p, operands)
                }) else { continue }
                if ms < best.milliseconds { best = (i, ms); plan.algorithm = algorithm }
            }
            if best.milliseconds.isFinite { context.tuning.record(key, Self.algorithmCode(candidate(best.index)), .timed) }
        }
        plans[p] = plan
        return plan
    }

    /// The tuning key of a product: every field of its problem, and whether C is added.
    static func tuningKey(_ p: Problem, accumulates: Bool) -> String {
        "cublaslt m=\(p.m) n=\(p.n) k=\(p.k) trans=\(p.transA ? 1 : 0)\(p.transB ? 1 : 0) ld=\(p.lda),\(p.ldb),\(p.ldd) "
            + "epilogue=\(p.epilogue) batch=\(p.batch) strides=\(p.strideA),\(p.strideB),\(p.strideD) type=\(p.dataType.rawValue) "
            + "alpha=\(p.alpha) precision=\(p.precision) c=\(accumulates ? 1 : 0)"
    }

    /// The algorithm of a heuristic result: its leading `cublasLtMatmulAlgo_t` (64 bytes of plain configuration
    /// values — algorithm id, tile, stages, split-K… — which cuBLASLt lets callers store and reuse).
    static func algorithmBytes(_ heuristicResult: [UInt8]) -> [UInt8] { Array(heuristicResult.prefix(algorithmByteCount)) }
    static let algorithmByteCount = 64

    /// A heuristic result's algorithm as a `CUDATuningRecord` choice ("algo" and 128 hex digits), and back.
    static func algorithmCode(_ heuristicResult: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        return "algo " + String(algorithmBytes(heuristicResult).flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] })
    }
    static func algorithm(_ code: String) -> [UInt8]? {
        guard code.hasPrefix("algo ") else { return nil }
        let hex = Array(code.utf8.dropFirst(5))
        guard hex.count == 2 * algorithmByteCount else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            default: return nil
            }
        }
        var bytes: [UInt8] = []
        for i in stride(from: 0, to: hex.count, by: 2) {
            guard let high = nibble(hex[i]), let low = nibble(hex[i + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }
}

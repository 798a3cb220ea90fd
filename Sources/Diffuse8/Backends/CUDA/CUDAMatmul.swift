#if canImport(Glibc)
import Glibc
#endif

/// FP16 GEMMs through cuBLASLt (FP32 accumulation and scaling), with the bias / GELU epilogues.
///
/// cuBLASLt is column-major; a row-major [r, c] matrix is the column-major [c, r] matrix, so every
/// row-major product here is issued as its transpose. Descriptors, layouts and the algorithm (the fastest of
/// the heuristic's candidates, timed on the first call) are cached per shape, so a repeated GEMM costs one
/// `cublasLtMatmul` call.
/// Limitations: cuBLASLt's GELU epilogue is the tanh approximation (diffusers' exact-erf GELU goes through
/// `CUDAKernels.gelu`/`geglu`); FP16 or BF16 (the context's storage type; INT8/FP8 come with quantization).
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
    func run(_ problem: Problem, a: UInt64, b: UInt64, d: UInt64, bias: UInt64? = nil, c: UInt64? = nil) throws {
        var problem = problem
        problem.dataType = storageType
        let plan = try lock.withLock { try plans[problem] ?? makePlan(problem, operands: (a, b, d, bias, c)) }
        if let bias {
            var pointer = bias
            try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descBiasPointer, &pointer, 8),
                          "cublasLtMatmulDescSetAttribute(BIAS_POINTER)")
        }
        try launch(plan.algorithm, plan, problem, (a, b, d, bias, c))
    }

    /// One `cublasLtMatmul` with `algorithm` (a heuristic result, whose first bytes are the algorithm).
    private func launch(_ algorithm: [UInt8], _ plan: Plan, _ problem: Problem, _ o: Operands) throws {
        var alpha: Float = problem.alpha, beta: Float = o.c == nil ? 0 : 1
        try context.makeCurrent()
        let status = algorithm.withUnsafeBytes { algo in
            api.cublasLtMatmul(handle, plan.descriptor, &alpha, o.a, plan.layoutA, o.b, plan.layoutB, &beta, o.c ?? o.d, plan.layoutD,
                               o.d, plan.layoutD, algo.baseAddress, workspace.address, Self.workspaceBytes,
                               context.stream.handle)
        }
        try api.check(status, "cublasLtMatmul", "problem \(problem)")
    }

    /// The operand addresses of the first call of a shape, used to time candidate algorithms.
    typealias Operands = (a: UInt64, b: UInt64, d: UInt64, bias: UInt64?, c: UInt64?)

    private func makePlan(_ p: Problem, operands: Operands) throws -> Plan {
        let plan = Plan(api: api)
        try api.check(api.cublasLtMatmulDescCreate(&plan.descriptor, CUBLASLtAPI.computeFloat32, CUBLASLtAPI.dataFloat32),
                      "cublasLtMatmulDescCreate")
        var transA: Int32 = p.transA ? 1 : 0, transB: Int32 = p.transB ? 1 : 0, epilogue = p.epilogue.code
        try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descTransA, &transA, 4), "set TRANSA")
        try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descTransB, &transB, 4), "set TRANSB")
        try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descEpilogue, &epilogue, 4), "set EPILOGUE")
        func layout(_ rows: Int, _ cols: Int, _ ld: Int, _ stride: Int) throws -> OpaquePointer? {
            var l: OpaquePointer? = nil
            let type = p.dataType == .bfloat16 ? CUBLASLtAPI.dataBFloat16 : CUBLASLtAPI.dataFloat16
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
        plan.layoutD = try layout(p.m, p.n, p.ldd, p.strideD)

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
        let wanted = autotunes && !context.allocator.isCapturing && operands.c != operands.d ? Self.autotuneCandidates : 1
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
        if found > 1 {
            if let bias = operands.bias {
                var pointer = bias
                try api.check(api.cublasLtMatmulDescSetAttribute(plan.descriptor, CUBLASLtAPI.descBiasPointer, &pointer, 8), "set BIAS")
            }
            var best = Double.infinity
            for i in 0..<Int(found) {
                let algorithm = candidate(i)
                // A candidate that fails to run (rare: heuristic results are meant to be valid) is skipped.
                guard let ms = try? CUDABenchmark.time(context, warmup: 1, repeats: 3, {
                    try launch(algorithm, plan, p, operands)
                }) else { continue }
                if ms < best { best = ms; plan.algorithm = algorithm }
            }
        }
        plans[p] = plan
        return plan
    }
}

/// 8-bit convolutions and matrix products through cuDNN's graph API.
///
/// Convolutions: channels-last input codes x [n, h, w, c] and weight codes [o, kh, kw, c] (FP8 E4M3 or INT8)
/// multiplied on the tensor cores and accumulated in FP32 (FP8) or INT32 (INT8), then, per output channel,
/// y = sums · α[o] + bias[o] in FP32, stored 16-bit channels-last [n, oh, ow, o] — the conv → descale → scale pattern
/// of cuDNN's FP8 convolution samples, with one scale per output channel.
/// Matrix products (`Shape.isMatmul`): y[r, j] = (Σ_k x[r, k]·W[j, k]) · α[j] + bias[j] + residual[r, j] on row-major
/// codes x [rows, k] and W [out, k] (stored as `c` = k, `h` = rows, `o` = out): the INT8 GEMM with its dequantization
/// in the epilogue, which cuBLASLt does not offer on Hopper.
///
/// Two graph forms, tried in this order per shape: `.fusedEpilogue` (scale, bias and residual inside cuDNN's kernel)
/// and, for convolutions, `.sums` (cuDNN writes the FP32/INT32 sums; the caller applies α and the bias). Of the plans
/// cuDNN's heuristics offer, up to four are timed on the call's own buffers and the fastest is kept.
///
/// Limitations: no groups or dilation; c and o multiples of 16 (cuDNN's 8-bit alignment); compute capability 8.9
/// or newer for FP8. A shape with no plan throws; callers then take their other path.
final class CUDNNEightBitGraphs: @unchecked Sendable {
    struct Shape: Hashable {
        var n: Int, c: Int, h: Int, w: Int, o: Int, kh: Int, kw: Int, stride: Int, padding: Int
        var format: QuantizedFormat
        var isMatmul = false
        var hasBias: Bool
        var hasResidual = false
        /// The 16-bit output type (the context's storage type).
        var outputType: CUDADataType

        var outputHeight: Int { (h + 2 * padding - kh) / stride + 1 }
        var outputWidth: Int { (w + 2 * padding - kw) / stride + 1 }
    }

    enum Form: String {
        case fusedEpilogue = "scale and bias fused", sums = "sums, then our scale kernel"

        /// The form as a `CUDATuningRecord` choice.
        var tuningCode: String { self == .fusedEpilogue ? "fused" : "sums" }
        init?(tuningCode: String) {
            switch tuningCode {
            case "fused": self = .fusedEpilogue
            case "sums": self = .sums
            default: return nil
            }
        }
    }

    struct Plan {
        let plan: CUDNNExecutionPlan
        let form: Form
        /// Median milliseconds of the chosen plan when it was timed (0 when it was not).
        let milliseconds: Double
    }

    /// Device addresses of one call's operands. `sums` (FP32 or INT32 [n, oh, ow, o]) is only used by `.sums` plans.
    struct Operands {
        var x: UInt64, weight: UInt64, alpha: UInt64, bias: UInt64?, residual: UInt64? = nil, y: UInt64, sums: UInt64 = 0
    }

    let context: CUDAContext
    let api: CUDNNAPI
    let handle: OpaquePointer?
    private var plans: [Shape: Plan] = [:]
    private var unsupported: [Shape: String] = [:]
    private let lock = CUDALock()

    init(context: CUDAContext) throws {
        self.context = context
        api = try context.cudnn()
        handle = try api.makeHandle(on: context)
    }

    /// The plan for `shape`, made and timed on first use with `operands` (outside a CUDA graph capture: the first
    /// plan that finalizes is taken untimed). `run` queues a plan's whole work, the caller's epilogue included.
    func plan(_ shape: Shape, timing: Bool, run: (Plan) throws -> Void) throws -> Plan {
        if let known = lock.withLock({ plans[shape] }) { return known }
        if let why = lock.withLock({ unsupported[shape] }) { throw CUDAError.invalidArgument("cuDNN 8-bit convolution: \(why)") }
        let key = Self.tuningKey(shape)
        if let recorded = recordedPlan(shape, key: key, validate: timing, run: run) {
            lock.withLock { plans[shape] = recorded }
            return recorded
        }
        var failures: [String] = []
        for form in shape.isMatmul ? [Form.fusedEpilogue] : [.fusedEpilogue, .sums] {
            let candidates: [CUDNNExecutionPlan]
            do { candidates = try makePlans(shape, form: form, limit: timing ? 4 : 1) } catch { failures.append("\(form): \(error)"); continue }
            var best: (plan: Plan, index: Int)?
            for (index, candidate) in candidates.enumerated() {
                let plan = Plan(plan: candidate, form: form, milliseconds: 0)
                guard timing else { best = (plan, index); break }
                // A plan that fails to run (e.g. no kernel image for this GPU) just drops out.
                guard let ms = try? CUDABenchmark.time(context, warmup: 1, repeats: 5, { try run(plan) }) else { continue }
                if ms < best.map({ $0.plan.milliseconds }) ?? .infinity { best = (Plan(plan: candidate, form: form, milliseconds: ms), index) }
            }
            if let best {
                lock.withLock { plans[shape] = best.plan }
                context.tuning.record(key, Self.tuningCode(form: form, index: best.index), timing ? .timed : .untimed)
                return best.plan
            }
            failures.append("\(form): no plan ran")
        }
        let why = "no plan for \(shape) (\(failures.joined(separator: "; ")))"
        lock.withLock { unsupported[shape] = why }
        throw CUDAError.invalidArgument("cuDNN 8-bit convolution: \(why)")
    }

    /// The plan an earlier run chose for `shape` (`CUDATuningRecord`: its form and its place in cuDNN's heuristic
    /// list, the same for the same card and cuDNN), if it still finalizes and, when `validate`, runs; nil otherwise.
    private func recordedPlan(_ shape: Shape, key: String, validate: Bool, run: (Plan) throws -> Void) -> Plan? {
        context.tuning.useHint(key) { hint in
            let parts = hint.split(separator: " ")
            guard parts.count == 2, let form = Form(tuningCode: String(parts[0])), form == .fusedEpilogue || !shape.isMatmul,
                  let index = Int(parts[1]), (0..<8).contains(index),
                  let candidates = try? makePlans(shape, form: form, limit: index + 1), index < candidates.count else { return nil }
            let plan = Plan(plan: candidates[index], form: form, milliseconds: 0)
            // Inside a capture (no validation) the plan runs once, for the call.
            if validate, (try? run(plan)) == nil { return nil }
            return plan
        }
    }

    /// The tuning key of a graph: everything its plan choice depends on.
    static func tuningKey(_ s: Shape) -> String {
        "cudnn-8bit-\(s.isMatmul ? "matmul" : "conv") n=\(s.n) c=\(s.c) h=\(s.h) w=\(s.w) o=\(s.o) k=\(s.kh)x\(s.kw) stride=\(s.stride) "
            + "padding=\(s.padding) format=\(s.format.rawValue) bias=\(s.hasBias ? 1 : 0) residual=\(s.hasResidual ? 1 : 0) "
            + "output=\(s.outputType.rawValue)"
    }

    static func tuningCode(form: Form, index: Int) -> String { "\(form.tuningCode) \(index)" }

    /// Queues `plan` on the context's stream.
    func execute(_ plan: Plan, _ shape: Shape, _ operands: Operands) throws {
        let workspace = plan.plan.workspaceBytes > 0 ? try context.allocate(bytes: plan.plan.workspaceBytes) : nil
        var uids = [UID.x, UID.w], addresses = [operands.x, operands.weight]
        switch plan.form {
        case .fusedEpilogue:
            uids += [UID.alpha, UID.y]
            addresses += [operands.alpha, operands.y]
            if let bias = operands.bias, shape.hasBias {
                uids.append(UID.bias)
                addresses.append(bias)
            }
            if let residual = operands.residual, shape.hasResidual {
                uids.append(UID.residual)
                addresses.append(residual)
            }
        case .sums:
            uids.append(UID.sums)
            addresses.append(operands.sums)
        }
        try plan.plan.execute(api, handle: handle, uids: uids, pointers: addresses.map { UnsafeMutableRawPointer(bitPattern: UInt($0)) },
                              workspace: workspace?.address ?? 0, "8-bit \(shape.isMatmul ? "matmul" : "convolution") \(shape)")
        withExtendedLifetime(workspace) {}
    }

    private func makePlans(_ s: Shape, form: Form, limit: Int) throws -> [CUDNNExecutionPlan] {
        typealias DataType = CUDNNGraph.DataType
        let g = CUDNNGraph(api: api, handle: handle)
        let codeType = s.format == .fp8 ? DataType.fp8E4M3 : DataType.int8
        let sumType = s.format == .fp8 ? DataType.float : DataType.int32
        let outputType = s.outputType == .bfloat16 ? DataType.bfloat16 : DataType.half
        let x: CUDNNDescriptor, w: CUDNNDescriptor, outputDims: [Int], outputStrides: [Int], channelDims: [Int], channelStrides: [Int]
        if s.isMatmul {
            let (rows, k, n) = (s.h, s.c, s.o)
            x = try g.tensor([1, rows, k], [rows * k, k, 1], type: codeType, uid: UID.x)
            w = try g.tensor([1, k, n], [k * n, 1, k], type: codeType, uid: UID.w)  // Wᵀ of the row-major [n, k] codes
            (outputDims, outputStrides, channelDims, channelStrides) = ([1, rows, n], [rows * n, n, 1], [1, 1, n], [n, n, 1])
        } else {
            let (oh, ow) = (s.outputHeight, s.outputWidth)
            // Dimensions are always NCHW-ordered; the strides make the tensors channels-last.
            x = try g.tensor([s.n, s.c, s.h, s.w], [s.h * s.w * s.c, 1, s.w * s.c, s.c], type: codeType, uid: UID.x)
            w = try g.tensor([s.o, s.c, s.kh, s.kw], [s.kh * s.kw * s.c, 1, s.kw * s.c, s.c], type: codeType, uid: UID.w)
            (outputDims, outputStrides) = ([s.n, s.o, oh, ow], [oh * ow * s.o, 1, ow * s.o, s.o])
            (channelDims, channelStrides) = ([1, s.o, 1, 1], [s.o, 1, s.o, s.o])
        }
        func product(into y: CUDNNDescriptor) throws -> CUDNNDescriptor {
            s.isMatmul ? try g.matmul(x, w, y, computeType: sumType)
                : try g.convolution(x, w, y, stride: s.stride, padding: s.padding, computeType: sumType)
        }
        var operations: [CUDNNDescriptor] = []
        switch form {
        case .sums:
            operations.append(try product(into: try g.tensor(outputDims, outputStrides, type: sumType, uid: UID.sums)))
        case .fusedEpilogue:
            // × α, + bias, + residual, each step FP32, the last one 16-bit. INT8 matrix products hand over their sums as
            // FP32 (as cuDNN's INT8 matmul samples do), convolutions in their own type.
            let sums = try g.tensor(outputDims, outputStrides, type: s.isMatmul ? DataType.float : sumType)
            operations.append(try product(into: sums))
            var steps: [(Int32, CUDNNDescriptor)] = [(CUDNNGraph.Pointwise.mul, try g.tensor(channelDims, channelStrides, type: DataType.float, uid: UID.alpha))]
            if s.hasBias { steps.append((CUDNNGraph.Pointwise.add, try g.tensor(channelDims, channelStrides, type: outputType, uid: UID.bias))) }
            if s.hasResidual { steps.append((CUDNNGraph.Pointwise.add, try g.tensor(outputDims, outputStrides, type: outputType, uid: UID.residual))) }
            var value = sums
            for (i, (mode, operand)) in steps.enumerated() {
                let last = i == steps.count - 1
                let next = last ? try g.tensor(outputDims, outputStrides, type: outputType, uid: UID.y)
                    : try g.tensor(outputDims, outputStrides, type: DataType.float)
                operations.append(try g.pointwise(mode, value, operand, next))
                value = next
            }
        }
        return try g.executionPlans(operations, limit: limit, orFallback: true, "8-bit \(s.isMatmul ? "matmul" : "convolution") \(s), \(form)")
    }

    enum UID { static let x: Int64 = 1, w: Int64 = 2, alpha: Int64 = 3, bias: Int64 = 4, y: Int64 = 5, sums: Int64 = 6, residual: Int64 = 7 }
}

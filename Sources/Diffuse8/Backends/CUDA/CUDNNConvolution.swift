/// NCHW (or channels-last, `Shape.channelsLast`) FP16 convolutions through cuDNN (FP32 accumulation, tensor-op math), with the fastest algorithm
/// chosen once per shape by `cudnnFindConvolutionForwardAlgorithmEx` (it times the candidates on the
/// call's own buffers) and cached with its descriptors.
///
/// Limitations: no groups or dilation; the bias is added by a separate kernel; the search needs up to
/// `searchWorkspaceBytes` of scratch memory once per shape.
final class CUDNNConvolution: @unchecked Sendable {
    struct Shape: Hashable {
        var n: Int, c: Int, h: Int, w: Int, o: Int, kh: Int, kw: Int, stride: Int, padding: Int
        /// Channels-last tensors: x [n, h, w, c], weight [o, kh, kw, c], y [n, oh, ow, o] (tensor cores' native layout).
        var channelsLast = false
        /// x, weight and y's type (the context's storage type, filled in by `forward`).
        var dataType = CUDADataType.float16
    }

    final class Plan {
        let api: CUDNNAPI
        var x: OpaquePointer? = nil, y: OpaquePointer? = nil, filter: OpaquePointer? = nil, convolution: OpaquePointer? = nil
        var algorithm: Int32 = 0
        var workspaceBytes = 0
        /// Milliseconds cuDNN measured for the chosen algorithm (for reports).
        var measuredMilliseconds: Float = 0
        /// The `CUDATuningRecord` choice this plan was made from, until it has run once.
        var untriedRecord: String?
        init(api: CUDNNAPI) { self.api = api }
        deinit {
            _ = api.cudnnDestroyTensorDescriptor(x)
            _ = api.cudnnDestroyTensorDescriptor(y)
            _ = api.cudnnDestroyFilterDescriptor(filter)
            _ = api.cudnnDestroyConvolutionDescriptor(convolution)
        }
    }

    let context: CUDAContext
    let api: CUDNNAPI
    let handle: OpaquePointer?
    private var plans: [Shape: Plan] = [:]
    private let lock = CUDALock()
    static let searchWorkspaceBytes = 256 << 20

    /// The 16-bit type of the operands.
    let storageType: CUDADataType

    init(context: CUDAContext, storageType: CUDADataType) throws {
        self.storageType = storageType
        self.context = context
        api = try context.cudnn()
        handle = try api.makeHandle(on: context)
    }

    /// Queues y = conv(x, w) (no bias). x: [n, c, h, w], weight [o, c, kh, kw], y: [n, o, oh, ow].
    func forward(_ shape: Shape, x: UInt64, weight: UInt64, y: UInt64) throws {
        try context.makeCurrent()
        var shape = shape
        shape.dataType = storageType
        let plan = try lock.withLock { try plans[shape] ?? makePlan(shape, x: x, weight: weight, y: y) }
        guard let recorded = plan.untriedRecord else { return try run(plan, shape, x: x, weight: weight, y: y) }
        // A recorded algorithm that does not run here is dropped, and the search runs after all.
        let key = Self.tuningKey(shape)
        do {
            try run(plan, shape, x: x, weight: weight, y: y)
            plan.untriedRecord = nil
            context.tuning.record(key, recorded, .recorded)
        } catch {
            context.tuning.rejectHint(key)
            let searched = try lock.withLock {
                plans[shape] = nil
                return try makePlan(shape, x: x, weight: weight, y: y, usingRecord: false)
            }
            try run(searched, shape, x: x, weight: weight, y: y)
        }
    }

    private func run(_ plan: Plan, _ shape: Shape, x: UInt64, weight: UInt64, y: UInt64) throws {
        let workspace = plan.workspaceBytes > 0 ? try context.allocate(bytes: plan.workspaceBytes) : nil
        var alpha: Float = 1, beta: Float = 0
        try api.check(api.cudnnConvolutionForward(handle, &alpha, plan.x, x, plan.filter, weight, plan.convolution,
                                                  plan.algorithm, workspace?.address ?? 0, plan.workspaceBytes,
                                                  &beta, plan.y, y),
                      "cudnnConvolutionForward(\(shape), algo \(plan.algorithm))")
        withExtendedLifetime(workspace) {}
    }

    /// The tuning key of a convolution's algorithm: every field of its shape.
    static func tuningKey(_ s: Shape) -> String {
        "cudnn-conv n=\(s.n) c=\(s.c) h=\(s.h) w=\(s.w) o=\(s.o) k=\(s.kh)x\(s.kw) stride=\(s.stride) padding=\(s.padding) "
            + "channels-last=\(s.channelsLast ? 1 : 0) type=\(s.dataType.rawValue)"
    }

    /// An algorithm choice as a `CUDATuningRecord` choice ("algo A math M workspace W"), and back.
    static func tuningCode(algorithm: Int32, mathType: Int32, workspaceBytes: Int) -> String {
        "algo \(algorithm) math \(mathType) workspace \(workspaceBytes)"
    }
    static func decodeTuningCode(_ code: String) -> (algorithm: Int32, mathType: Int32, workspaceBytes: Int)? {
        let parts = code.split(separator: " ")
        guard parts.count == 6, parts[0] == "algo", parts[2] == "math", parts[4] == "workspace",
              let algorithm = Int32(parts[1]), let mathType = Int32(parts[3]), let workspace = Int(parts[5]),
              (0..<64).contains(algorithm), (0..<16).contains(mathType), (0...(1 << 40)).contains(workspace) else { return nil }
        return (algorithm, mathType, workspace)
    }

    private func makePlan(_ s: Shape, x: UInt64, weight: UInt64, y: UInt64, usingRecord: Bool = true) throws -> Plan {
        let plan = Plan(api: api)
        let oh = (s.h + 2 * s.padding - s.kh) / s.stride + 1, ow = (s.w + 2 * s.padding - s.kw) / s.stride + 1
        let half = s.dataType == .bfloat16 ? CUDNNAPI.dataBFloat16 : CUDNNAPI.dataFloat16, nchw = s.channelsLast ? CUDNNAPI.formatNHWC : CUDNNAPI.formatNCHW
        try api.check(api.cudnnCreateTensorDescriptor(&plan.x), "cudnnCreateTensorDescriptor")
        try api.check(api.cudnnSetTensor4dDescriptor(plan.x, nchw, half, Int32(s.n), Int32(s.c), Int32(s.h), Int32(s.w)),
                      "cudnnSetTensor4dDescriptor(x \(s))")
        try api.check(api.cudnnCreateTensorDescriptor(&plan.y), "cudnnCreateTensorDescriptor")
        try api.check(api.cudnnSetTensor4dDescriptor(plan.y, nchw, half, Int32(s.n), Int32(s.o), Int32(oh), Int32(ow)),
                      "cudnnSetTensor4dDescriptor(y)")
        try api.check(api.cudnnCreateFilterDescriptor(&plan.filter), "cudnnCreateFilterDescriptor")
        try api.check(api.cudnnSetFilter4dDescriptor(plan.filter, half, nchw, Int32(s.o), Int32(s.c), Int32(s.kh), Int32(s.kw)),
                      "cudnnSetFilter4dDescriptor")
        try api.check(api.cudnnCreateConvolutionDescriptor(&plan.convolution), "cudnnCreateConvolutionDescriptor")
        try api.check(api.cudnnSetConvolution2dDescriptor(plan.convolution, Int32(s.padding), Int32(s.padding),
                                                          Int32(s.stride), Int32(s.stride), 1, 1,
                                                          CUDNNAPI.crossCorrelation, CUDNNAPI.dataFloat32),
                      "cudnnSetConvolution2dDescriptor")
        try api.check(api.cudnnSetConvolutionMathType(plan.convolution, CUDNNAPI.tensorOpMath), "cudnnSetConvolutionMathType")

        // The algorithm an earlier run's search found (`CUDATuningRecord`): no search; `forward` checks that it runs.
        let key = Self.tuningKey(s)
        if usingRecord, let hint = context.tuning.takeHint(key) {
            if let recorded = Self.decodeTuningCode(hint),
               api.cudnnSetConvolutionMathType(plan.convolution, recorded.mathType) == 0 {
                plan.algorithm = recorded.algorithm
                plan.workspaceBytes = recorded.workspaceBytes
                plan.untriedRecord = hint
                plans[s] = plan
                return plan
            }
            context.tuning.rejectHint(key)
        }

        let scratch = try context.allocate(bytes: Self.searchWorkspaceBytes)
        let requested = 8
        var results = [UInt8](repeating: 0, count: CUDNNAPI.algoPerfSize * requested)
        var returned: Int32 = 0
        try results.withUnsafeMutableBytes { buffer in
            try api.check(api.cudnnFindConvolutionForwardAlgorithmEx(handle, plan.x, x, plan.filter, weight, plan.convolution,
                                                                      plan.y, y, Int32(requested), &returned,
                                                                      buffer.baseAddress!, scratch.address,
                                                                      Self.searchWorkspaceBytes),
                          "cudnnFindConvolutionForwardAlgorithmEx(\(s))")
        }
        withExtendedLifetime(scratch) {}
        // Results come sorted by time; take the first that succeeded.
        for i in 0..<Int(returned) {
            let base = i * CUDNNAPI.algoPerfSize
            let field = { (offset: Int) in results.withUnsafeBytes { $0.load(fromByteOffset: base + offset, as: Int32.self) } }
            guard field(4) == 0 else { continue }
            plan.algorithm = field(0)
            plan.measuredMilliseconds = results.withUnsafeBytes { $0.load(fromByteOffset: base + 8, as: Float.self) }
            plan.workspaceBytes = results.withUnsafeBytes { Int($0.load(fromByteOffset: base + 16, as: UInt64.self)) }
            try api.check(api.cudnnSetConvolutionMathType(plan.convolution, field(28)), "cudnnSetConvolutionMathType")
            plans[s] = plan
            context.tuning.record(key, Self.tuningCode(algorithm: plan.algorithm, mathType: field(28), workspaceBytes: plan.workspaceBytes), .timed)
            return plan
        }
        throw CUDAError.cudnn(call: "cudnnFindConvolutionForwardAlgorithmEx", status: 9,
                              message: "no algorithm succeeded for \(s) (\(returned) tried)")
    }
}

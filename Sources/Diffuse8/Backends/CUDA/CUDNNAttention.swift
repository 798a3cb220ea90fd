/// Scaled dot-product attention through cuDNN's graph ("backend") API: cuDNN fuses the graph below into one
/// flash-attention kernel (Hopper: its own wgmma kernels), which beats our `mma.sync` kernel at long sequences.
///
/// The operation graph is the one cudnn-frontend's SDPA node builds for inference (cuDNN < 9.21 composite
/// softmax): S = Q·Kᵀ (FP32) → S·scale → softmax over keys as max / subtract / exp / sum / divide (plus the
/// log-sum-exp statistics, virtual) → P (FP16) → O = P·V. Q, K, V and O are read and written in place with
/// strides — rows of [B, L, stride] halves with head h at channel h·D — so the fused QKV projection and the
/// UNet-wide cross-attention K/V buffer need no copies. One execution plan (heuristic mode A, first config that
/// finalizes) per shape and strides, cached.
///
/// Limitations: FP16 or BF16 storage (the context's); head dims cuDNN supports (multiples of 8, ≤ 128 here); pointers 16-byte aligned;
/// no masks. A shape cuDNN cannot fuse throws, and `CUDAKernels` then keeps its own kernel for that shape.
final class CUDNNAttention: @unchecked Sendable {
    struct Shape: Hashable {
        var batch: Int, heads: Int, queries: Int, keys: Int, headDim: Int
        var queryStride: Int, keyValueStride: Int
        /// Q, K, V and O's type (the context's storage type, filled in by `forward`).
        var dataType = CUDADataType.float16
    }

    let context: CUDAContext
    let api: CUDNNAPI
    let handle: OpaquePointer?
    private var plans: [Shape: CUDNNExecutionPlan] = [:]
    private var unsupported: [Shape: String] = [:]
    private let lock = CUDALock()

    /// The 16-bit type of the operands.
    let storageType: CUDADataType

    init(context: CUDAContext, storageType: CUDADataType) throws {
        self.storageType = storageType
        self.context = context
        api = try context.cudnn()
        handle = try api.makeHandle(on: context)
    }

    /// Queues O = softmax(scale·Q·Kᵀ)·V. Addresses as in `CUDAKernels.attention(query:queryStride:…)`; `output` is
    /// [batch, queries, heads·headDim] contiguous.
    func forward(_ shape: Shape, query: UInt64, key: UInt64, value: UInt64, output: UInt64, scale: Float) throws {
        try context.makeCurrent()
        var shape = shape
        shape.dataType = storageType
        let plan = try lock.withLock { () throws -> CUDNNExecutionPlan in
            if let known = plans[shape] { return known }
            if let why = unsupported[shape] { throw CUDAError.invalidArgument("cuDNN attention: \(why)") }
            do {
                let made = try makePlan(shape)
                plans[shape] = made
                return made
            } catch {
                unsupported[shape] = "\(error)"
                throw error
            }
        }
        let workspace = plan.workspaceBytes > 0 ? try context.allocate(bytes: plan.workspaceBytes) : nil
        var scaleValue = scale
        try withUnsafeMutablePointer(to: &scaleValue) { scalePointer in
            let pointers: [UnsafeMutableRawPointer?] = [query, key, value, output].map { UnsafeMutableRawPointer(bitPattern: UInt($0)) }
                + [UnsafeMutableRawPointer(scalePointer)]
            try plan.execute(api, handle: handle, uids: [UID.q, UID.k, UID.v, UID.o, UID.scale], pointers: pointers,
                             workspace: workspace?.address ?? 0, "attention \(shape)")
        }
        withExtendedLifetime(workspace) {}
    }

    private func makePlan(_ s: Shape) throws -> CUDNNExecutionPlan {
        let g = CUDNNGraph(api: api, handle: handle)
        typealias DataType = CUDNNGraph.DataType
        typealias Pointwise = CUDNNGraph.Pointwise
        typealias Reduction = CUDNNGraph.Reduction
        let (b, h, sq, sk, d) = (s.batch, s.heads, s.queries, s.keys, s.headDim)
        let io = s.dataType == .bfloat16 ? DataType.bfloat16 : DataType.half
        let scores = [b, h, sq, sk], scoreStrides = [h * sq * sk, sq * sk, sk, 1]
        let rows = [b, h, sq, 1], rowStrides = [h * sq, sq, 1, 1]
        let q = try g.tensor([b, h, sq, d], [sq * s.queryStride, d, s.queryStride, 1], type: io, uid: UID.q)
        let kT = try g.tensor([b, h, d, sk], [sk * s.keyValueStride, d, 1, s.keyValueStride], type: io, uid: UID.k)
        let v = try g.tensor([b, h, sk, d], [sk * s.keyValueStride, d, s.keyValueStride, 1], type: io, uid: UID.v)
        let o = try g.tensor([b, h, sq, d], [sq * h * d, d, h * d, 1], type: io, uid: UID.o)
        let scale = try g.tensor([1, 1, 1, 1], [1, 1, 1, 1], type: DataType.float, uid: UID.scale, byValue: true)

        let s1 = try g.tensor(scores, scoreStrides, type: DataType.float)
        let s2 = try g.tensor(scores, scoreStrides, type: DataType.float)
        let rowMax = try g.tensor(rows, rowStrides, type: DataType.float)
        let shifted = try g.tensor(scores, scoreStrides, type: DataType.float)
        let exponentials = try g.tensor(scores, scoreStrides, type: DataType.float)
        let rowSum = try g.tensor(rows, rowStrides, type: DataType.float)
        let logSum = try g.tensor(rows, rowStrides, type: DataType.float)
        let statistics = try g.tensor(rows, rowStrides, type: DataType.float)
        let probabilities = try g.tensor(scores, scoreStrides, type: io)

        let operations = [
            try g.matmul(q, kT, s1),
            try g.pointwise(Pointwise.mul, s1, scale, s2),
            try g.reduction(Reduction.max, s2, rowMax),
            try g.pointwise(Pointwise.sub, s2, rowMax, shifted),
            try g.pointwise(Pointwise.exp, shifted, nil, exponentials),
            try g.reduction(Reduction.add, exponentials, rowSum),
            try g.pointwise(Pointwise.log, rowSum, nil, logSum),
            try g.pointwise(Pointwise.add, rowMax, logSum, statistics),
            try g.pointwise(Pointwise.div, exponentials, rowSum, probabilities),
            try g.matmul(probabilities, v, o),
        ]
        return try g.executionPlans(operations, limit: 1, "fused attention \(s)")[0]
    }

    enum UID { static let q: Int64 = 1, k: Int64 = 2, v: Int64 = 3, o: Int64 = 4, scale: Int64 = 5 }
}

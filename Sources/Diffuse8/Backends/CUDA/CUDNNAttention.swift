/// Scaled dot-product attention through cuDNN's graph ("backend") API: cuDNN fuses the graph below into one
/// flash-attention kernel (Hopper: its own wgmma kernels), which beats our `mma.sync` kernel at long sequences.
///
/// The operation graph is the one cudnn-frontend's SDPA node builds for inference (cuDNN < 9.21 composite
/// softmax): S = Q·Kᵀ (FP32) → S·scale → softmax over keys as max / subtract / exp / sum / divide (plus the
/// log-sum-exp statistics, virtual) → P (FP16) → O = P·V. Q, K, V and O are read and written in place with
/// strides — rows of [B, L, stride] halves with head h at channel h·D — so the fused QKV projection and the
/// UNet-wide cross-attention K/V buffer need no copies. One execution plan (heuristic mode A, first config that
/// finalizes) per shape and strides, cached: at SDXL's self-attention shapes the first was the fastest of those
/// offered, 16-bit and FP8 (kernel bench part `cudnn-attention-plans`).
///
/// FP8 (level 4, `forwardFP8`): the graph of cudnn-frontend's FP8 SDPA node — Q, K and V as E4M3 codes, S = Q·Kᵀ
/// (FP32) · scale · descale_Q · descale_K → the same softmax → P · scale_P rounded to E4M3 → O = P·V · descale_P ·
/// descale_V · scale_O as E4M3 codes (plus amax(O), which the graph must produce). As a graph, the simulation's
/// `FP8AttentionSimulation` followed by the output projection's input quantizer; but cuDNN's kernel rounds the
/// probabilities inside its flash loop, before normalising (exp(s − running max) · scale_P), which keeps small
/// probabilities the simulation flushes to FP8's subnormals: outputs differ from the simulation's by a few percent,
/// not by a rounding step. On Hopper cuDNN writes an FP8 attention's output only in FP8; `CUDAKernels.cudnnFP8Attention`
/// splits the work into calls of at most one wave of tiles.
///
/// Limitations: FP16 or BF16 storage (the context's); head dims cuDNN supports (multiples of 8, ≤ 128 here; FP8:
/// multiples of 16, ≤ 256); pointers 16-byte aligned; no masks. A shape cuDNN cannot fuse throws, and `CUDAKernels`
/// then keeps its own kernel for that shape.
final class CUDNNAttention: @unchecked Sendable {
    struct Shape: Hashable {
        var batch: Int, heads: Int, queries: Int, keys: Int, headDim: Int
        var queryStride: Int, keyValueStride: Int
        /// Elements between two output rows (nil: heads · headDim, a contiguous output; more when a call covers some heads).
        var outputStride: Int? = nil
        /// Q, K, V and O's type (the context's storage type, filled in by `forward`; `.float8e4m3` by `forwardFP8`).
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

    /// Which of the execution plans cuDNN's heuristics offer (in their order) each shape's graph runs: 0, the first,
    /// unless a measurement asks for another (plans are made again for every shape; a shape with fewer plans throws).
    var planIndex = 0 {
        didSet { lock.withLock { plans.removeAll(); unsupported.removeAll() } }
    }

    init(context: CUDAContext, storageType: CUDADataType) throws {
        self.storageType = storageType
        self.context = context
        api = try context.cudnn()
        handle = try api.makeHandle(on: context)
    }

    /// Queues O = softmax(scale·Q·Kᵀ)·V. Addresses as in `CUDAKernels.attention(query:queryStride:…)`; `output` is
    /// [batch, queries, heads·headDim] contiguous.
    func forward(_ shape: Shape, query: UInt64, key: UInt64, value: UInt64, output: UInt64, scale: Float) throws {
        var shape = shape
        shape.dataType = storageType
        try execute(shape, scale: scale, [query, key, value, output], uids: [UID.q, UID.k, UID.v, UID.o])
    }

    /// Runs `shape`'s plan (made on first use) on device `addresses` for `uids`, plus the by-value `scale`.
    private func execute(_ shape: Shape, scale: Float, _ addresses: [UInt64], uids: [Int64]) throws {
        try context.makeCurrent()
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
            let pointers: [UnsafeMutableRawPointer?] = addresses.map { UnsafeMutableRawPointer(bitPattern: UInt($0)) }
                + [UnsafeMutableRawPointer(scalePointer)]
            try plan.execute(api, handle: handle, uids: uids + [UID.scale], pointers: pointers,
                             workspace: workspace?.address ?? 0, "attention \(shape)")
        }
        withExtendedLifetime(workspace) {}
    }

    /// Queues level-4 FP8 attention: `query`, `key`, `value` point at E4M3 codes (rows as in `forward`, strides in
    /// elements = bytes), `output` receives [batch, queries, heads·headDim] E4M3 codes with scale O; `scales` is the
    /// device address of `FP8AttentionScales.upload`'s layout, `amax` of one FP32 the graph writes amax(O) to.
    func forwardFP8(_ shape: Shape, query: UInt64, key: UInt64, value: UInt64, output: UInt64, scales: UInt64, amax: UInt64,
                    scale: Float) throws {
        var shape = shape
        shape.dataType = .float8e4m3
        try execute(shape, scale: scale, [query, key, value, output, amax]
            + (0..<UInt64(FP8AttentionScales.count)).map { scales + $0 * UInt64(FP8AttentionScales.stride) },
            uids: [UID.q, UID.k, UID.v, UID.o, UID.amaxO, UID.descaleQ, UID.descaleK, UID.descaleV, UID.descaleP, UID.scaleP, UID.scaleO])
    }

    private func makePlan(_ s: Shape) throws -> CUDNNExecutionPlan {
        s.dataType == .float8e4m3 ? try makeFP8Plan(s) : try make16BitPlan(s)
    }

    private func make16BitPlan(_ s: Shape) throws -> CUDNNExecutionPlan {
        let g = CUDNNGraph(api: api, handle: handle)
        typealias DataType = CUDNNGraph.DataType
        let io = s.dataType == .bfloat16 ? DataType.bfloat16 : DataType.half
        let (q, kT, v) = try operands(g, s, type: io)
        let o = try g.tensor([s.batch, s.heads, s.queries, s.headDim], outputStrides(s), type: io, uid: UID.o)
        let scale = try g.tensor([1, 1, 1, 1], [1, 1, 1, 1], type: DataType.float, uid: UID.scale, byValue: true)
        let (s1, s2) = (try scores(g, s), try scores(g, s))
        let probabilities = try scores(g, s, type: io)
        let operations = [try g.matmul(q, kT, s1), try g.pointwise(CUDNNGraph.Pointwise.mul, s1, scale, s2)]
            + (try softmax(g, s, s2, into: probabilities)) + [try g.matmul(probabilities, v, o)]
        return try chosenPlan(g.executionPlans(operations, limit: planIndex + 1, "fused attention \(s)"), "fused attention \(s)")
    }

    /// The FP8 graph (see the type's overview): the 16-bit graph's softmax between the two scaled 8-bit products.
    private func makeFP8Plan(_ s: Shape) throws -> CUDNNExecutionPlan {
        let g = CUDNNGraph(api: api, handle: handle)
        typealias DataType = CUDNNGraph.DataType
        typealias Pointwise = CUDNNGraph.Pointwise
        let fp8 = DataType.fp8E4M3
        let (q, kT, v) = try operands(g, s, type: fp8)
        let outputs = [s.batch, s.heads, s.queries, s.headDim]
        let o = try g.tensor(outputs, outputStrides(s), type: fp8, uid: UID.o)
        let amaxO = try g.tensor([1, 1, 1, 1], [1, 1, 1, 1], type: DataType.float, uid: UID.amaxO)
        let scale = try g.tensor([1, 1, 1, 1], [1, 1, 1, 1], type: DataType.float, uid: UID.scale, byValue: true)
        let scalar = { (uid: Int64) in try g.tensor([1, 1, 1, 1], [1, 1, 1, 1], type: DataType.float, uid: uid) }
        let (descaleQ, descaleK, descaleV) = (try scalar(UID.descaleQ), try scalar(UID.descaleK), try scalar(UID.descaleV))
        let (descaleP, scaleP, scaleO) = (try scalar(UID.descaleP), try scalar(UID.scaleP), try scalar(UID.scaleO))
        let (s1, s2, s3, s4) = (try scores(g, s), try scores(g, s), try scores(g, s), try scores(g, s))
        let probabilities = try scores(g, s), probabilityCodes = try scores(g, s, type: fp8)
        let virtualOutputs = { try g.tensor(outputs, self.outputStrides(s), type: DataType.float) }
        let (o1, o2, o3) = (try virtualOutputs(), try virtualOutputs(), try virtualOutputs())
        let operations = [
            try g.matmul(q, kT, s1),
            try g.pointwise(Pointwise.mul, s1, scale, s2),
            try g.pointwise(Pointwise.mul, s2, descaleQ, s3),
            try g.pointwise(Pointwise.mul, s3, descaleK, s4),
        ] + (try softmax(g, s, s4, into: probabilities)) + [
            try g.pointwise(Pointwise.mul, probabilities, scaleP, probabilityCodes),
            try g.matmul(probabilityCodes, v, o1),
            try g.pointwise(Pointwise.mul, o1, descaleP, o2),
            try g.pointwise(Pointwise.mul, o2, descaleV, o3),
            try g.pointwise(Pointwise.mul, o3, scaleO, o),
            try g.reduction(CUDNNGraph.Reduction.amax, o3, amaxO),
        ]
        return try chosenPlan(g.executionPlans(operations, limit: planIndex + 1, "fused FP8 attention \(s)"), "fused FP8 attention \(s)")
    }

    /// The plan at `planIndex` of those cuDNN offered.
    private func chosenPlan(_ offered: [CUDNNExecutionPlan], _ what: String) throws -> CUDNNExecutionPlan {
        guard planIndex < offered.count else {
            throw CUDAError.invalidArgument("cuDNN offers \(offered.count) plans for \(what), not \(planIndex + 1)")
        }
        return offered[planIndex]
    }

    /// Q, Kᵀ and V read in place: rows of `queryStride` / `keyValueStride` elements, head h at channel h·headDim.
    private func operands(_ g: CUDNNGraph, _ s: Shape, type: Int32) throws -> (CUDNNDescriptor, CUDNNDescriptor, CUDNNDescriptor) {
        let (b, h, sq, sk, d) = (s.batch, s.heads, s.queries, s.keys, s.headDim)
        return (try g.tensor([b, h, sq, d], [sq * s.queryStride, d, s.queryStride, 1], type: type, uid: UID.q),
                try g.tensor([b, h, d, sk], [sk * s.keyValueStride, d, 1, s.keyValueStride], type: type, uid: UID.k),
                try g.tensor([b, h, sk, d], [sk * s.keyValueStride, d, s.keyValueStride, 1], type: type, uid: UID.v))
    }

    /// O's strides as [b, h, queries, headDim]: rows of `outputStride` elements.
    private func outputStrides(_ s: Shape) -> [Int] {
        let row = s.outputStride ?? s.heads * s.headDim
        return [s.queries * row, s.headDim, row, 1]
    }

    /// A virtual [b, h, queries, keys] tensor (FP32 unless `type`).
    private func scores(_ g: CUDNNGraph, _ s: Shape, type: Int32 = CUDNNGraph.DataType.float) throws -> CUDNNDescriptor {
        try g.tensor([s.batch, s.heads, s.queries, s.keys], [s.heads * s.queries * s.keys, s.queries * s.keys, s.keys, 1], type: type)
    }

    /// The softmax over keys as cudnn-frontend writes it for the fused kernel: max, subtract, exp, sum, divide, with the
    /// log-sum-exp statistics as a virtual tensor.
    private func softmax(_ g: CUDNNGraph, _ s: Shape, _ x: CUDNNDescriptor, into probabilities: CUDNNDescriptor) throws -> [CUDNNDescriptor] {
        typealias Pointwise = CUDNNGraph.Pointwise
        let rows = [s.batch, s.heads, s.queries, 1], rowStrides = [s.heads * s.queries, s.queries, 1, 1]
        let row = { try g.tensor(rows, rowStrides, type: CUDNNGraph.DataType.float) }
        let (rowMax, rowSum, logSum, statistics) = (try row(), try row(), try row(), try row())
        let (shifted, exponentials) = (try scores(g, s), try scores(g, s))
        return [
            try g.reduction(CUDNNGraph.Reduction.max, x, rowMax),
            try g.pointwise(Pointwise.sub, x, rowMax, shifted),
            try g.pointwise(Pointwise.exp, shifted, nil, exponentials),
            try g.reduction(CUDNNGraph.Reduction.add, exponentials, rowSum),
            try g.pointwise(Pointwise.log, rowSum, nil, logSum),
            try g.pointwise(Pointwise.add, rowMax, logSum, statistics),
            try g.pointwise(Pointwise.div, exponentials, rowSum, probabilities),
        ]
    }

    enum UID {
        static let q: Int64 = 1, k: Int64 = 2, v: Int64 = 3, o: Int64 = 4, scale: Int64 = 5
        static let descaleQ: Int64 = 6, descaleK: Int64 = 7, descaleV: Int64 = 8, descaleP: Int64 = 9, scaleP: Int64 = 10
        static let scaleO: Int64 = 11, amaxO: Int64 = 12
    }
}

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

    /// One descriptor of the backend API, destroyed with the object.
    final class Descriptor {
        let api: CUDNNAPI
        var raw: CUDNNAPI.Descriptor = nil
        init(_ api: CUDNNAPI, _ type: Int32) throws {
            self.api = api
            try api.check(api.cudnnBackendCreateDescriptor(type, &raw), "cudnnBackendCreateDescriptor(\(type))")
        }
        deinit { _ = api.cudnnBackendDestroyDescriptor(raw) }

        func set<T>(_ name: Int32, _ type: Int32, _ values: [T]) throws {
            try values.withUnsafeBytes {
                try api.check(api.cudnnBackendSetAttribute(raw, name, type, Int64(values.count), $0.baseAddress), "cudnnBackendSetAttribute(\(name))")
            }
        }
        func set(_ name: Int32, descriptors: [Descriptor]) throws {
            try set(name, Kind.descriptor, descriptors.map(\.raw))
        }
        func finalize(_ what: String) throws { try api.check(api.cudnnBackendFinalize(raw), "cudnnBackendFinalize(\(what))") }
    }

    final class Plan {
        let plan: Descriptor
        let workspaceBytes: Int
        /// Keeps the graph's descriptors alive as long as the plan.
        let parts: [Descriptor]
        init(plan: Descriptor, workspaceBytes: Int, parts: [Descriptor]) {
            self.plan = plan
            self.workspaceBytes = workspaceBytes
            self.parts = parts
        }
    }

    let context: CUDAContext
    let api: CUDNNAPI
    let handle: OpaquePointer?
    private var plans: [Shape: Plan] = [:]
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
        let plan = try lock.withLock { () throws -> Plan in
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
            let pack = try Descriptor(api, Kind.variantPack)
            let pointers: [UnsafeMutableRawPointer?] = [query, key, value, output].map { UnsafeMutableRawPointer(bitPattern: UInt($0)) }
                + [UnsafeMutableRawPointer(scalePointer)]
            try pack.set(Attribute.variantPackUniqueIDs, Kind.int64, [UID.q, UID.k, UID.v, UID.o, UID.scale])
            try pack.set(Attribute.variantPackDataPointers, Kind.voidPointer, pointers)
            try pack.set(Attribute.variantPackWorkspace, Kind.voidPointer,
                         [UnsafeMutableRawPointer(bitPattern: UInt(workspace?.address ?? 0))])
            try pack.finalize("variant pack")
            try api.check(api.cudnnBackendExecute(handle, plan.plan.raw, pack.raw), "cudnnBackendExecute(attention \(shape))")
        }
        withExtendedLifetime(workspace) {}
    }

    private func makePlan(_ s: Shape) throws -> Plan {
        var parts: [Descriptor] = []
        var nextVirtual: Int64 = 100
        func tensor(_ dims: [Int], _ strides: [Int], type: Int32, uid: Int64? = nil, byValue: Bool = false) throws -> Descriptor {
            let t = try Descriptor(api, Kind.tensorDescriptor)
            let id = uid ?? { nextVirtual += 1; return nextVirtual }()
            try t.set(Attribute.tensorDataType, Kind.dataType, [type])
            try t.set(Attribute.tensorDimensions, Kind.int64, dims.map(Int64.init))
            try t.set(Attribute.tensorStrides, Kind.int64, strides.map(Int64.init))
            try t.set(Attribute.tensorUniqueID, Kind.int64, [id])
            try t.set(Attribute.tensorByteAlignment, Kind.int64, [Int64(16)])
            try t.set(Attribute.tensorIsVirtual, Kind.boolean, [uid == nil])
            if byValue { try t.set(Attribute.tensorIsByValue, Kind.boolean, [true]) }
            try t.finalize("tensor \(dims)")
            parts.append(t)
            return t
        }
        func operation(_ type: Int32, _ attributes: [(Int32, Descriptor)], _ what: String) throws -> Descriptor {
            let op = try Descriptor(api, type)
            for (name, d) in attributes { try op.set(name, descriptors: [d]) }
            try op.finalize(what)
            parts.append(op)
            return op
        }
        func pointwise(_ mode: Int32, _ x: Descriptor, _ b: Descriptor?, _ y: Descriptor) throws -> Descriptor {
            let pw = try Descriptor(api, Kind.pointwiseDescriptor)
            try pw.set(Attribute.pointwiseMode, Kind.pointwiseMode, [mode])
            try pw.set(Attribute.pointwiseMathPrecision, Kind.dataType, [DataType.float])
            try pw.finalize("pointwise \(mode)")
            parts.append(pw)
            var inputs = [(Attribute.operationPointwiseDescriptor, pw), (Attribute.operationPointwiseX, x)]
            if let b { inputs.append((Attribute.operationPointwiseB, b)) }
            return try operation(Kind.operationPointwise, inputs + [(Attribute.operationPointwiseY, y)], "pointwise op \(mode)")
        }
        func reduction(_ mode: Int32, _ x: Descriptor, _ y: Descriptor) throws -> Descriptor {
            let r = try Descriptor(api, Kind.reductionDescriptor)
            try r.set(Attribute.reductionOperator, Kind.reductionOperator, [mode])
            try r.set(Attribute.reductionComputeType, Kind.dataType, [DataType.float])
            try r.finalize("reduction \(mode)")
            parts.append(r)
            return try operation(Kind.operationReduction, [(Attribute.operationReductionDescriptor, r), (Attribute.operationReductionX, x),
                                                           (Attribute.operationReductionY, y)], "reduction op \(mode)")
        }
        func matmul(_ a: Descriptor, _ b: Descriptor, _ c: Descriptor) throws -> Descriptor {
            let m = try Descriptor(api, Kind.matmulDescriptor)
            try m.set(Attribute.matmulComputeType, Kind.dataType, [DataType.float])
            try m.finalize("matmul")
            parts.append(m)
            return try operation(Kind.operationMatmul, [(Attribute.operationMatmulDescriptor, m), (Attribute.operationMatmulA, a),
                                                        (Attribute.operationMatmulB, b), (Attribute.operationMatmulC, c)], "matmul op")
        }

        let (b, h, sq, sk, d) = (s.batch, s.heads, s.queries, s.keys, s.headDim)
        let io = s.dataType == .bfloat16 ? DataType.bfloat16 : DataType.half
        let scores = [b, h, sq, sk], scoreStrides = [h * sq * sk, sq * sk, sk, 1]
        let rows = [b, h, sq, 1], rowStrides = [h * sq, sq, 1, 1]
        let q = try tensor([b, h, sq, d], [sq * s.queryStride, d, s.queryStride, 1], type: io, uid: UID.q)
        let kT = try tensor([b, h, d, sk], [sk * s.keyValueStride, d, 1, s.keyValueStride], type: io, uid: UID.k)
        let v = try tensor([b, h, sk, d], [sk * s.keyValueStride, d, s.keyValueStride, 1], type: io, uid: UID.v)
        let o = try tensor([b, h, sq, d], [sq * h * d, d, h * d, 1], type: io, uid: UID.o)
        let scale = try tensor([1, 1, 1, 1], [1, 1, 1, 1], type: DataType.float, uid: UID.scale, byValue: true)

        let s1 = try tensor(scores, scoreStrides, type: DataType.float)
        let s2 = try tensor(scores, scoreStrides, type: DataType.float)
        let rowMax = try tensor(rows, rowStrides, type: DataType.float)
        let shifted = try tensor(scores, scoreStrides, type: DataType.float)
        let exponentials = try tensor(scores, scoreStrides, type: DataType.float)
        let rowSum = try tensor(rows, rowStrides, type: DataType.float)
        let logSum = try tensor(rows, rowStrides, type: DataType.float)
        let statistics = try tensor(rows, rowStrides, type: DataType.float)
        let probabilities = try tensor(scores, scoreStrides, type: io)

        let operations = [
            try matmul(q, kT, s1),
            try pointwise(Pointwise.mul, s1, scale, s2),
            try reduction(Reduction.max, s2, rowMax),
            try pointwise(Pointwise.sub, s2, rowMax, shifted),
            try pointwise(Pointwise.exp, shifted, nil, exponentials),
            try reduction(Reduction.add, exponentials, rowSum),
            try pointwise(Pointwise.log, rowSum, nil, logSum),
            try pointwise(Pointwise.add, rowMax, logSum, statistics),
            try pointwise(Pointwise.div, exponentials, rowSum, probabilities),
            try matmul(probabilities, v, o),
        ]
        let graph = try Descriptor(api, Kind.operationGraph)
        try graph.set(Attribute.operationGraphHandle, Kind.handle, [handle])
        try graph.set(Attribute.operationGraphOps, descriptors: operations)
        try graph.finalize("operation graph")
        parts.append(graph)

        let heuristics = try Descriptor(api, Kind.engineHeuristics)
        try heuristics.set(Attribute.engineHeuristicsOperationGraph, descriptors: [graph])
        try heuristics.set(Attribute.engineHeuristicsMode, Kind.heuristicsMode, [Int32(3)])  // CUDNN_HEUR_MODE_A
        try heuristics.finalize("engine heuristics")
        let candidates = try (0..<8).map { _ in try Descriptor(api, Kind.engineConfig) }
        var found: Int64 = 0
        var raws = candidates.map(\.raw)
        try raws.withUnsafeMutableBytes {
            try api.check(api.cudnnBackendGetAttribute(heuristics.raw, Attribute.engineHeuristicsResults, Kind.descriptor,
                                                       Int64(candidates.count), &found, $0.baseAddress), "engine heuristics results")
        }
        var failures: [String] = []
        for config in candidates.prefix(Int(found)) {
            do {
                let plan = try Descriptor(api, Kind.executionPlan)
                try plan.set(Attribute.executionPlanHandle, Kind.handle, [handle])
                try plan.set(Attribute.executionPlanEngineConfig, descriptors: [config])
                try plan.finalize("execution plan")
                var workspace: Int64 = 0, count: Int64 = 0
                try api.check(api.cudnnBackendGetAttribute(plan.raw, Attribute.executionPlanWorkspaceSize, Kind.int64, 1, &count, &workspace),
                              "execution plan workspace size")
                return Plan(plan: plan, workspaceBytes: Int(workspace), parts: parts + [config])
            } catch {
                failures.append("\(error)")
            }
        }
        throw CUDAError.invalidArgument("cuDNN has no fused attention plan for \(s) (\(found) candidate configs: \(failures.prefix(2).joined(separator: "; ")))")
    }

    // Values from cudnn_graph.h (cuDNN 9).
    enum Kind {
        // cudnnBackendAttributeType_t
        static let handle: Int32 = 0, dataType: Int32 = 1, boolean: Int32 = 2, int64: Int32 = 3, voidPointer: Int32 = 6
        static let heuristicsMode: Int32 = 8, pointwiseMode: Int32 = 14, descriptor: Int32 = 15, reductionOperator: Int32 = 18
        // cudnnBackendDescriptorType_t
        static let pointwiseDescriptor: Int32 = 0, engineConfig: Int32 = 3, engineHeuristics: Int32 = 4, executionPlan: Int32 = 5
        static let operationPointwise: Int32 = 13, operationGraph: Int32 = 15, variantPack: Int32 = 16, tensorDescriptor: Int32 = 17
        static let matmulDescriptor: Int32 = 18, operationMatmul: Int32 = 19, reductionDescriptor: Int32 = 21, operationReduction: Int32 = 22
    }
    enum Attribute {
        static let pointwiseMode: Int32 = 0, pointwiseMathPrecision: Int32 = 1
        static let engineHeuristicsMode: Int32 = 200, engineHeuristicsOperationGraph: Int32 = 201, engineHeuristicsResults: Int32 = 202
        static let executionPlanHandle: Int32 = 400, executionPlanEngineConfig: Int32 = 401, executionPlanWorkspaceSize: Int32 = 402
        static let operationPointwiseDescriptor: Int32 = 750, operationPointwiseX: Int32 = 751, operationPointwiseB: Int32 = 752
        static let operationPointwiseY: Int32 = 753
        static let operationGraphHandle: Int32 = 800, operationGraphOps: Int32 = 801
        static let tensorByteAlignment: Int32 = 900, tensorDataType: Int32 = 901, tensorDimensions: Int32 = 902, tensorStrides: Int32 = 903
        static let tensorUniqueID: Int32 = 906, tensorIsVirtual: Int32 = 907, tensorIsByValue: Int32 = 908
        static let variantPackUniqueIDs: Int32 = 1000, variantPackDataPointers: Int32 = 1001, variantPackWorkspace: Int32 = 1003
        static let matmulComputeType: Int32 = 1500
        static let operationMatmulA: Int32 = 1520, operationMatmulB: Int32 = 1521, operationMatmulC: Int32 = 1522
        static let operationMatmulDescriptor: Int32 = 1523
        static let reductionOperator: Int32 = 1600, reductionComputeType: Int32 = 1601
        static let operationReductionX: Int32 = 1610, operationReductionY: Int32 = 1611, operationReductionDescriptor: Int32 = 1612
    }
    enum DataType { static let float: Int32 = 0, half: Int32 = 2, bfloat16: Int32 = 9 }
    enum Pointwise { static let add: Int32 = 0, mul: Int32 = 1, div: Int32 = 6, sub: Int32 = 9, exp: Int32 = 13, log: Int32 = 15 }
    /// cudnnReduceTensorOp_t
    enum Reduction { static let add: Int32 = 0, max: Int32 = 3 }
    enum UID { static let q: Int64 = 1, k: Int64 = 2, v: Int64 = 3, o: Int64 = 4, scale: Int64 = 5 }
}

/// cuDNN's graph ("backend") API as the fused attention and the 8-bit convolutions use it: one descriptor type, a
/// builder for an operation graph (tensors, operations), and the execution plans cuDNN's heuristics offer for it.
/// Constants are cuDNN 9's (`cudnn_graph.h`).

/// One descriptor of the backend API, destroyed with the object.
final class CUDNNDescriptor {
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
    func set(_ name: Int32, descriptors: [CUDNNDescriptor]) throws {
        try set(name, CUDNNGraph.Kind.descriptor, descriptors.map(\.raw))
    }
    func finalize(_ what: String) throws { try api.check(api.cudnnBackendFinalize(raw), "cudnnBackendFinalize(\(what))") }
}

/// A finalized execution plan and the graph descriptors it needs alive.
final class CUDNNExecutionPlan {
    let plan: CUDNNDescriptor
    let workspaceBytes: Int
    let parts: [CUDNNDescriptor]

    init(plan: CUDNNDescriptor, workspaceBytes: Int, parts: [CUDNNDescriptor]) {
        self.plan = plan
        self.workspaceBytes = workspaceBytes
        self.parts = parts
    }

    /// Queues the plan on `handle`'s stream with the tensors `uids` at `pointers` (device addresses, or host addresses
    /// of by-value scalars).
    func execute(_ api: CUDNNAPI, handle: OpaquePointer?, uids: [Int64], pointers: [UnsafeMutableRawPointer?], workspace: UInt64,
                 _ what: String) throws {
        let pack = try CUDNNDescriptor(api, CUDNNGraph.Kind.variantPack)
        try pack.set(CUDNNGraph.Attribute.variantPackUniqueIDs, CUDNNGraph.Kind.int64, uids)
        try pack.set(CUDNNGraph.Attribute.variantPackDataPointers, CUDNNGraph.Kind.voidPointer, pointers)
        try pack.set(CUDNNGraph.Attribute.variantPackWorkspace, CUDNNGraph.Kind.voidPointer,
                     [UnsafeMutableRawPointer(bitPattern: UInt(workspace))])
        try pack.finalize("variant pack")
        try api.check(api.cudnnBackendExecute(handle, plan.raw, pack.raw), "cudnnBackendExecute(\(what))")
    }
}

/// Builds one operation graph. Tensors given no unique id are virtual (intermediate values cuDNN keeps on chip).
final class CUDNNGraph {
    let api: CUDNNAPI
    let handle: OpaquePointer?
    private(set) var parts: [CUDNNDescriptor] = []
    private var nextVirtual: Int64 = 100

    init(api: CUDNNAPI, handle: OpaquePointer?) {
        self.api = api
        self.handle = handle
    }

    func tensor(_ dims: [Int], _ strides: [Int], type: Int32, uid: Int64? = nil, byValue: Bool = false) throws -> CUDNNDescriptor {
        let t = try CUDNNDescriptor(api, Kind.tensorDescriptor)
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

    func operation(_ type: Int32, _ attributes: [(Int32, CUDNNDescriptor)], _ what: String,
                   configure: (CUDNNDescriptor) throws -> Void = { _ in }) throws -> CUDNNDescriptor {
        let op = try CUDNNDescriptor(api, type)
        for (name, d) in attributes { try op.set(name, descriptors: [d]) }
        try configure(op)
        try op.finalize(what)
        parts.append(op)
        return op
    }

    func pointwise(_ mode: Int32, _ x: CUDNNDescriptor, _ b: CUDNNDescriptor?, _ y: CUDNNDescriptor) throws -> CUDNNDescriptor {
        let pw = try CUDNNDescriptor(api, Kind.pointwiseDescriptor)
        try pw.set(Attribute.pointwiseMode, Kind.pointwiseMode, [mode])
        try pw.set(Attribute.pointwiseMathPrecision, Kind.dataType, [DataType.float])
        try pw.finalize("pointwise \(mode)")
        parts.append(pw)
        var inputs = [(Attribute.operationPointwiseDescriptor, pw), (Attribute.operationPointwiseX, x)]
        if let b { inputs.append((Attribute.operationPointwiseB, b)) }
        return try operation(Kind.operationPointwise, inputs + [(Attribute.operationPointwiseY, y)], "pointwise op \(mode)")
    }

    func reduction(_ mode: Int32, _ x: CUDNNDescriptor, _ y: CUDNNDescriptor) throws -> CUDNNDescriptor {
        let r = try CUDNNDescriptor(api, Kind.reductionDescriptor)
        try r.set(Attribute.reductionOperator, Kind.reductionOperator, [mode])
        try r.set(Attribute.reductionComputeType, Kind.dataType, [DataType.float])
        try r.finalize("reduction \(mode)")
        parts.append(r)
        return try operation(Kind.operationReduction, [(Attribute.operationReductionDescriptor, r), (Attribute.operationReductionX, x),
                                                       (Attribute.operationReductionY, y)], "reduction op \(mode)")
    }

    func matmul(_ a: CUDNNDescriptor, _ b: CUDNNDescriptor, _ c: CUDNNDescriptor, computeType: Int32 = DataType.float) throws -> CUDNNDescriptor {
        let m = try CUDNNDescriptor(api, Kind.matmulDescriptor)
        try m.set(Attribute.matmulComputeType, Kind.dataType, [computeType])
        try m.finalize("matmul")
        parts.append(m)
        return try operation(Kind.operationMatmul, [(Attribute.operationMatmulDescriptor, m), (Attribute.operationMatmulA, a),
                                                    (Attribute.operationMatmulB, b), (Attribute.operationMatmulC, c)], "matmul op")
    }

    /// y = x ⋆ w (2-D cross-correlation, no dilation) accumulated in `computeType`.
    func convolution(_ x: CUDNNDescriptor, _ w: CUDNNDescriptor, _ y: CUDNNDescriptor, stride: Int, padding: Int,
                     computeType: Int32) throws -> CUDNNDescriptor {
        let c = try CUDNNDescriptor(api, Kind.convolutionDescriptor)
        try c.set(Attribute.convolutionSpatialDims, Kind.int64, [Int64(2)])
        try c.set(Attribute.convolutionComputeType, Kind.dataType, [computeType])
        try c.set(Attribute.convolutionMode, Kind.convolutionMode, [Int32(1)])  // CUDNN_CROSS_CORRELATION
        try c.set(Attribute.convolutionPrePaddings, Kind.int64, [Int64(padding), Int64(padding)])
        try c.set(Attribute.convolutionPostPaddings, Kind.int64, [Int64(padding), Int64(padding)])
        try c.set(Attribute.convolutionDilations, Kind.int64, [Int64(1), Int64(1)])
        try c.set(Attribute.convolutionFilterStrides, Kind.int64, [Int64(stride), Int64(stride)])
        try c.finalize("convolution")
        parts.append(c)
        return try operation(Kind.operationConvolutionForward, [(Attribute.operationConvolutionForwardDescriptor, c),
                                                                (Attribute.operationConvolutionForwardX, x),
                                                                (Attribute.operationConvolutionForwardW, w),
                                                                (Attribute.operationConvolutionForwardY, y)], "convolution op") { op in
            try op.set(Attribute.operationConvolutionForwardAlpha, Kind.float, [Float(1)])
            try op.set(Attribute.operationConvolutionForwardBeta, Kind.float, [Float(0)])
        }
    }

    /// The execution plans that finalize for the graph of `operations`, in the order of cuDNN's heuristics (mode A;
    /// with `orFallback`, cuDNN's fallback list when A offers none that finalizes), at most `limit`; throws when there is none.
    func executionPlans(_ operations: [CUDNNDescriptor], limit: Int, orFallback: Bool = false, _ what: String) throws -> [CUDNNExecutionPlan] {
        let graph = try CUDNNDescriptor(api, Kind.operationGraph)
        try graph.set(Attribute.operationGraphHandle, Kind.handle, [handle])
        try graph.set(Attribute.operationGraphOps, descriptors: operations)
        try graph.finalize("operation graph (\(what))")
        parts.append(graph)

        var failures: [String] = []
        for mode in orFallback ? [Int32(3), 2] : [3] {  // CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK
            let heuristics = try CUDNNDescriptor(api, Kind.engineHeuristics)
            try heuristics.set(Attribute.engineHeuristicsOperationGraph, descriptors: [graph])
            try heuristics.set(Attribute.engineHeuristicsMode, Kind.heuristicsMode, [mode])
            do { try heuristics.finalize("engine heuristics") } catch { failures.append("\(error)"); continue }
            let candidates = try (0..<8).map { _ in try CUDNNDescriptor(api, Kind.engineConfig) }
            var found: Int64 = 0
            var raws = candidates.map(\.raw)
            try raws.withUnsafeMutableBytes {
                try api.check(api.cudnnBackendGetAttribute(heuristics.raw, Attribute.engineHeuristicsResults, Kind.descriptor,
                                                           Int64(candidates.count), &found, $0.baseAddress), "engine heuristics results")
            }
            var plans: [CUDNNExecutionPlan] = []
            for config in candidates.prefix(Int(found)) where plans.count < limit {
                do {
                    let plan = try CUDNNDescriptor(api, Kind.executionPlan)
                    try plan.set(Attribute.executionPlanHandle, Kind.handle, [handle])
                    try plan.set(Attribute.executionPlanEngineConfig, descriptors: [config])
                    try plan.finalize("execution plan")
                    var workspace: Int64 = 0, count: Int64 = 0
                    try api.check(api.cudnnBackendGetAttribute(plan.raw, Attribute.executionPlanWorkspaceSize, Kind.int64, 1, &count, &workspace),
                                  "execution plan workspace size")
                    plans.append(CUDNNExecutionPlan(plan: plan, workspaceBytes: Int(workspace), parts: parts + [config]))
                } catch {
                    failures.append("\(error)")
                }
            }
            if !plans.isEmpty { return plans }
        }
        throw CUDAError.invalidArgument("cuDNN has no plan for \(what) (\(failures.prefix(2).joined(separator: "; ")))")
    }

    enum Kind {
        // cudnnBackendAttributeType_t
        static let handle: Int32 = 0, dataType: Int32 = 1, boolean: Int32 = 2, int64: Int32 = 3, float: Int32 = 4, voidPointer: Int32 = 6
        static let convolutionMode: Int32 = 7, heuristicsMode: Int32 = 8, pointwiseMode: Int32 = 14, descriptor: Int32 = 15
        static let reductionOperator: Int32 = 18
        // cudnnBackendDescriptorType_t
        static let pointwiseDescriptor: Int32 = 0, convolutionDescriptor: Int32 = 1, engineConfig: Int32 = 3, engineHeuristics: Int32 = 4
        static let executionPlan: Int32 = 5, operationConvolutionForward: Int32 = 10, operationPointwise: Int32 = 13
        static let operationGraph: Int32 = 15, variantPack: Int32 = 16, tensorDescriptor: Int32 = 17
        static let matmulDescriptor: Int32 = 18, operationMatmul: Int32 = 19, reductionDescriptor: Int32 = 21, operationReduction: Int32 = 22
    }
    enum Attribute {
        static let pointwiseMode: Int32 = 0, pointwiseMathPrecision: Int32 = 1
        static let convolutionComputeType: Int32 = 100, convolutionMode: Int32 = 101, convolutionDilations: Int32 = 102
        static let convolutionFilterStrides: Int32 = 103, convolutionPostPaddings: Int32 = 104, convolutionPrePaddings: Int32 = 105
        static let convolutionSpatialDims: Int32 = 106
        static let engineHeuristicsMode: Int32 = 200, engineHeuristicsOperationGraph: Int32 = 201, engineHeuristicsResults: Int32 = 202
        static let executionPlanHandle: Int32 = 400, executionPlanEngineConfig: Int32 = 401, executionPlanWorkspaceSize: Int32 = 402
        static let operationConvolutionForwardAlpha: Int32 = 700, operationConvolutionForwardBeta: Int32 = 701
        static let operationConvolutionForwardDescriptor: Int32 = 702, operationConvolutionForwardW: Int32 = 703
        static let operationConvolutionForwardX: Int32 = 704, operationConvolutionForwardY: Int32 = 705
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
    /// cudnnDataType_t
    enum DataType {
        static let float: Int32 = 0, half: Int32 = 2, int8: Int32 = 3, int32: Int32 = 4, bfloat16: Int32 = 9, fp8E4M3: Int32 = 12
    }
    /// cudnnPointwiseMode_t
    enum Pointwise { static let add: Int32 = 0, mul: Int32 = 1, div: Int32 = 6, sub: Int32 = 9, exp: Int32 = 13, log: Int32 = 15 }
    /// cudnnReduceTensorOp_t
    enum Reduction { static let add: Int32 = 0, max: Int32 = 3, amax: Int32 = 4 }
}

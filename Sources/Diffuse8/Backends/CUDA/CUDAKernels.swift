/// 16-bit kernels on device tensors, mirroring `CPUKernels` (same names, layouts and PyTorch semantics),
/// so model code can run on either backend.
///
/// Storage is `storageType` (FP16 by default, or BF16), arithmetic FP32. Feature maps are NCHW; token
/// sequences [batch, tokens, channels]. GEMMs and convolutions (im2col + GEMM) go through cuBLASLt;
/// everything else is CUDA C compiled by NVRTC on first use (see `CUDAKernelSources`, `CUDAAttentionSource`).
/// All work is queued on `context.stream`; call `context.synchronize()` or `download` to wait.
/// Not thread-safe (settings and caches are plain properties): use one instance per thread.
public final class CUDAKernels: @unchecked Sendable {
    public let context: CUDAContext
    public let compiler: CUDAKernelCompiler
    public let matmul: CUDAMatmul
    /// How `conv2d` runs: cuDNN when it loads (`.automatic`), else im2col + cuBLASLt.
    public var convolutionBackend = ConvolutionBackend.automatic
    private var cudnnConvolution: CUDNNConvolution?
    private var cudnnUnavailable: Error?
    private var cudnnAttention: CUDNNAttention?
    private var cudnnAttentionUnavailable: Error?
    /// Where cuDNN's FP8 attention writes amax(O), which its graph must produce and nothing reads.
    private var fp8AttentionAmaxScratch: CUDATensor?
    /// cuDNN's 8-bit convolutions (`eightBitConvolution`), made on first use; the error when cuDNN is missing.
    var cudnnEightBitGraphs: CUDNNEightBitGraphs?
    var cudnnEightBitUnavailable: Error?
    /// Largest im2col column buffer `.automatic` measures as a candidate (256 MiB).
    static let im2colCandidateLimitBytes = 256 << 20
    /// `.automatic`'s choice per convolution shape (the fastest measured path).
    private var convolutionChoice: [CUDNNConvolution.Shape: ConvolutionPath] = [:]

    /// The path the last `conv2d` call took.
    public internal(set) var lastConvolutionPath: ConvolutionPath?

    /// Raw values: the path as a `CUDATuningRecord` choice.
    public enum ConvolutionPath: String, Sendable {
        case cudnn, im2colGEMM = "im2col-gemm"
        /// NCHW → NHWC transpose, cuDNN channels-last convolution, NHWC → NCHW transpose.
        case cudnnChannelsLast = "cudnn-channels-last"
        /// Our direct kernel for few input or output channels (`directConvolution`), bias included.
        case direct

        var tuningCode: String { rawValue }
        init?(tuningCode: String) { self.init(rawValue: tuningCode) }
    }

    /// The tuning key of `.automatic`'s path choice for a 16-bit convolution.
    static func convolutionTuningKey(_ s: CUDNNConvolution.Shape, channelsLastWeight: Bool, storageType: CUDADataType) -> String {
        "conv-path n=\(s.n) c=\(s.c) h=\(s.h) w=\(s.w) o=\(s.o) k=\(s.kh)x\(s.kw) stride=\(s.stride) padding=\(s.padding) "
            + "channels-last-weight=\(channelsLastWeight ? 1 : 0) type=\(storageType.rawValue)"
    }

    /// Which attention kernel `attention` launches.
    public var attentionKernel = AttentionKernel.automatic

    public enum AttentionKernel: Sendable, Hashable {
        /// The fastest of the candidates for the head dim (ours, and cuDNN's fused attention where it builds a
        /// plan), measured once per shape.
        case automatic
        /// 64 queries per block, synchronous K/V loads (every head dim).
        case simple
        /// 128 queries per block, cp.async double-buffered K/V (`CUDAAttentionSource.pipelinedHeadDims`).
        case pipelined
        /// cuDNN's fused flash attention (`CUDNNAttention`; throws where cuDNN is missing or cannot fuse the shape).
        case cudnn
        /// Every key in shared memory, loaded once per block, each warp walking 16-query tiles
        /// (`CUDAAttentionSource.shortKeysBody`): at most 128 keys, head dims `CUDAAttentionSource.shortKeyHeadDims`.
        case shortKeys

        /// A measured kernel as a `CUDATuningRecord` choice, and back.
        var tuningCode: String { "\(self)" }
        init?(tuningCode: String) {
            guard let kernel = [AttentionKernel.simple, .pipelined, .cudnn, .shortKeys].first(where: { $0.tuningCode == tuningCode })
            else { return nil }
            self = kernel
        }
    }

    public enum ConvolutionBackend: Sendable {
        /// Times cuDNN and im2col + GEMM once per shape and uses the faster (im2col + GEMM without cuDNN).
        case automatic
        /// cuDNN only (throws if it is missing).
        case cudnn
        /// im2col + one cuBLASLt GEMM per image.
        case im2colGEMM
        /// cuDNN on channels-last copies (needs `weightChannelsLast`; for tests).
        case cudnnChannelsLast
        /// Our direct kernel (throws for shapes it does not take: `directConvolutionApplies`; for tests).
        case direct
    }

    /// The 16-bit type every tensor these kernels take and return is stored in: `.float16` (default) or
    /// `.bfloat16`. Fixed per instance, so kernels of both types (two pipelines of different precision) can share
    /// one context; tensors of the other type are rejected.
    public let storageType: CUDADataType

    /// Kernels on the shared context (device 0). Throws with the full search report when CUDA is absent.
    public convenience init(storageType: CUDADataType = .float16) throws {
        try self.init(context: CUDAContext.shared(), storageType: storageType)
    }

    public init(context: CUDAContext, storageType: CUDADataType = .float16) throws {
        guard storageType != .float32 else { throw CUDAError.invalidArgument("CUDAKernels: the storage type is FP16 or BF16") }
        self.context = context
        self.storageType = storageType
        compiler = CUDAKernelCompiler(context: context, storageType: storageType)
        matmul = try CUDAMatmul(context: context, storageType: storageType)
    }

    /// An uninitialised device tensor of `storageType`.
    public func empty(_ shape: [Int]) throws -> CUDATensor { try context.empty(shape, dtype: storageType) }

    /// A host tensor copied to the device as `storageType` (rounded to nearest even).
    public func upload(_ tensor: Tensor) throws -> CUDATensor { try context.upload(tensor, dtype: storageType) }

    func basic(_ name: String) throws -> CUDAFunction {
        try compiler.function(name, module: "diffuse8_basic", source: CUDAKernelSources.basic)
    }

    func output(_ shape: [Int]) throws -> CUDATensor { try empty(shape) }

    /// Queues a wait of `microseconds` on the stream (a one-thread kernel). Work queued behind it while it runs starts
    /// without the gaps of the host's launches: per-operation timings then count the device's time, as a CUDA graph
    /// replays it, and not the host's (a cuDNN call, for one, takes longer to queue than to run).
    public func holdStream(microseconds: Int) throws {
        try compiler.launch(basic("hold_stream"), grid: (1, 1, 1), block: (1, 1, 1), [.int64(Int64(microseconds) * 1000)])
    }

    /// Median device milliseconds of the work `body` queues, for choosing between paths on first use: each of five
    /// runs is queued behind a hold of the stream, because a graph replay pays the device's time, not the host's
    /// time to queue (which, eagerly timed, made a cuDNN call of a few launches look slower than it runs).
    func tuningTime(_ body: () throws -> Void) throws -> Double {
        try CUDABenchmark.time(context, warmup: 1, repeats: 5,
                               hold: { try self.holdStream(microseconds: CUDABackend.timingHoldMicroseconds) }, body)
    }

    func requireHalf(_ tensors: CUDATensor?..., op: String) throws {
        for t in tensors.compactMap({ $0 }) where t.dtype != storageType {
            throw CUDAError.invalidArgument("\(op): expects \(storageType) tensors (these kernels' storage type), got \(t.dtype) of shape \(t.shape)")
        }
    }

    /// Grid for grid-stride element-wise kernels (256 threads, at most 16 blocks per SM).
    func elementwiseGrid(_ n: Int) -> (Int, Int, Int) {
        (max(1, min((n + 255) / 256, context.multiprocessorCount * 16)), 1, 1)
    }

    // MARK: Linear algebra

    /// `y = x · wᵀ + b` over the last dimension (`torch.nn.functional.linear`), optionally followed by
    /// cuBLASLt's GELU (tanh approximation). x: [..., in], weight: [out, in], bias: [out]. `residual` (shape of
    /// the output) is added by the GEMM itself (β = 1), after the epilogue: `y = act(x·wᵀ + b) + residual`.
    public func linear(_ x: CUDATensor, weight: CUDATensor, bias: CUDATensor?, tanhGELU: Bool = false,
                       residual: CUDATensor? = nil) throws -> CUDATensor {
        try requireHalf(x, weight, bias, residual, op: "linear")
        let inFeatures = weight.shape[1], outFeatures = weight.shape[0]
        guard x.shape.last == inFeatures, bias.map({ $0.count == outFeatures }) ?? true else {
            throw CUDAError.invalidArgument("linear: input \(x.shape), weight \(weight.shape), bias \(bias?.shape ?? [])")
        }
        let rows = x.count / inFeatures
        var shape = x.shape
        shape[shape.count - 1] = outFeatures
        if let residual, residual.shape != shape {
            throw CUDAError.invalidArgument("linear: residual \(residual.shape) for output \(shape)")
        }
        let y = try output(shape)
        let epilogue: CUDAMatmul.Epilogue = bias == nil ? (tanhGELU ? .gelu : .none) : (tanhGELU ? .biasGELU : .bias)
        // Column-major: yᵀ[out, rows] = W[in, out]ᵀ · xᵀ[in, rows].
        try matmul.run(.init(m: outFeatures, n: rows, k: inFeatures, transA: true, transB: false,
                             lda: inFeatures, ldb: inFeatures, ldd: outFeatures, epilogue: epilogue),
                       a: weight.address, b: x.address, d: y.address, bias: bias?.address, c: residual?.address)
        return y
    }

    /// Row-major batched product C[b] = A[b] · B[b]ᵀ, A: [batch, m, k], B: [batch, n, k] → [batch, m, n].
    public func matmulTransposedB(_ a: CUDATensor, _ b: CUDATensor) throws -> CUDATensor {
        try requireHalf(a, b, op: "matmulTransposedB")
        let batch = a.shape[0], m = a.shape[1], k = a.shape[2], n = b.shape[1]
        guard b.shape == [batch, n, k] else { throw CUDAError.invalidArgument("matmulTransposedB: \(a.shape) · \(b.shape)ᵀ") }
        let c = try output([batch, m, n])
        try matmul.run(.init(m: n, n: m, k: k, transA: true, transB: false, lda: k, ldb: k, ldd: n, epilogue: .none,
                             batch: batch, strideA: n * k, strideB: m * k, strideD: m * n),
                       a: b.address, b: a.address, d: c.address)
        return c
    }

    /// `torch.nn.functional.conv2d` on NCHW, weight [O, C, kh, kw], symmetric zero padding, through cuDNN
    /// (fastest algorithm found per shape), im2col + cuBLASLt, or — when `weightChannelsLast` ([O, kh, kw, C], the
    /// same weight permuted) is given — cuDNN on channels-last copies of x and y (transposed here; Hopper's
    /// tensor-core convolutions are channels-last, so this often pays for the two transposes). `.automatic` times
    /// the candidates once per shape and keeps the fastest. The bias is added by a separate kernel.
    /// Limitation: no groups or dilation.
    ///
    /// `forceChannelsLast` takes the channels-last path whatever the choice (for callers that dropped `weight`'s
    /// data and keep only `weightChannelsLast`; `weight` then only gives the shape). `lastConvolutionPath` tells
    /// which path the call took.
    public func conv2d(_ x: CUDATensor, weight: CUDATensor, bias: CUDATensor?, stride: Int = 1, padding: Int = 0,
                       weightChannelsLast: CUDATensor? = nil, forceChannelsLast: Bool = false) throws -> CUDATensor {
        try requireHalf(x, weight, bias, weightChannelsLast, op: "conv2d")
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
        guard weight.shape[1] == c else { throw CUDAError.invalidArgument("conv2d: weight \(weight.shape) vs input \(x.shape)") }
        if let weightChannelsLast, weightChannelsLast.shape != [o, kh, kw, c] {
            throw CUDAError.invalidArgument("conv2d: channels-last weight \(weightChannelsLast.shape), expected [\(o), \(kh), \(kw), \(c)]")
        }
        let oh = (h + 2 * padding - kh) / stride + 1, ow = (w + 2 * padding - kw) / stride + 1
        let shape = CUDNNConvolution.Shape(n: n, c: c, h: h, w: w, o: o, kh: kh, kw: kw, stride: stride, padding: padding)
        var lastShape = shape
        lastShape.channelsLast = true

        let cudnn = forceChannelsLast ? try cudnnRegardless() : try cudnnIfWanted()
        func run(_ path: ConvolutionPath) throws -> CUDATensor {
            switch path {
            case .im2colGEMM:
                let y = try output([n, o, oh, ow])
                try im2colConvolution(x, weight: weight, into: y, stride: stride, padding: padding)
                return y
            case .cudnn:
                let y = try output([n, o, oh, ow])
                try cudnn!.forward(shape, x: x.address, weight: weight.address, y: y.address)
                return y
            case .cudnnChannelsLast:
                let xt = try channelsToTokens(x)
                let yt = try output([n, oh * ow, o])
                try cudnn!.forward(lastShape, x: xt.address, weight: weightChannelsLast!.address, y: yt.address)
                return try tokensToChannels(yt, height: oh, width: ow)
            case .direct:
                let y = try output([n, o, oh, ow])
                try directConvolution(x, weight: weight, bias: bias, into: y, stride: stride, padding: padding)
                return y
            }
        }

        var path: ConvolutionPath
        var ranOutput: CUDATensor?
        switch forceChannelsLast ? .cudnnChannelsLast : convolutionBackend {
        case .im2colGEMM: path = .im2colGEMM
        case .cudnn: path = .cudnn
        case .direct: path = .direct
        case .cudnnChannelsLast:
            guard weightChannelsLast != nil, cudnn != nil else {
                throw CUDAError.invalidArgument("conv2d: .cudnnChannelsLast needs cuDNN and weightChannelsLast")
            }
            path = .cudnnChannelsLast
        case .automatic:
            let direct = Self.directConvolutionApplies(inputChannels: c, outputChannels: o, kernelHeight: kh, kernelWidth: kw)
            if cudnn == nil && !direct {
                path = .im2colGEMM
            } else if let known = convolutionChoice[weightChannelsLast == nil ? shape : lastShape] {
                path = known
            } else {
                // First time for this shape: measure the candidates (the cuDNN runs also do their algorithm search).
                var candidates: [ConvolutionPath] = cudnn == nil ? [] : [.cudnn]
                // im2col's column buffer (C·kh·kw × OH·OW halves) would stay in the allocator's cache: at VAE
                // decoder sizes (1024², 128 channels: 2.4 GB) it is never the fastest anyway, so it is not tried.
                if c * kh * kw * oh * ow * 2 <= Self.im2colCandidateLimitBytes { candidates.append(.im2colGEMM) }
                if weightChannelsLast != nil && cudnn != nil { candidates.append(.cudnnChannelsLast) }
                if direct { candidates.append(.direct) }
                // The path an earlier run measured fastest (`CUDATuningRecord`), if it is a candidate and runs.
                let key = Self.convolutionTuningKey(shape, channelsLastWeight: weightChannelsLast != nil, storageType: storageType)
                if let recorded = context.tuning.useHint(key, accept: { hint in
                    ConvolutionPath(tuningCode: hint).flatMap { p in candidates.contains(p) ? (try? run(p)).map { (p, $0) } : nil }
                }) {
                    (path, ranOutput) = recorded
                } else {
                    // A candidate cuDNN rejects for this shape (e.g. no channels-last algorithm) just drops out.
                    let best = CUDATuningTable.fastest(candidates) { candidate in try tuningTime { _ = try run(candidate) } }.best
                    path = best?.candidate ?? candidates.first ?? .im2colGEMM
                    if best != nil { context.tuning.record(key, path.tuningCode, .timed) }
                }
                convolutionChoice[weightChannelsLast == nil ? shape : lastShape] = path
                // An NCHW winner is also the best of the NCHW candidates: callers that drop the channels-last
                // weight then reuse the choice without measuring again.
                if path != .cudnnChannelsLast && convolutionChoice[shape] == nil { convolutionChoice[shape] = path }
            }
        }
        lastConvolutionPath = path
        let y = try ranOutput ?? run(path)
        if let bias, path != .direct {
            try compiler.launch(basic("add_channel_bias"), grid: elementwiseGrid(y.count), block: (256, 1, 1), [
                .tensor(y), .tensor(bias), .tensor(y), .int64(Int64(y.count)), .int(o), .int(oh * ow), .int32(0)])
        }
        return y
    }

    /// cuDNN whatever `convolutionBackend` says (throws without it).
    private func cudnnRegardless() throws -> CUDNNConvolution {
        if let cudnnConvolution { return cudnnConvolution }
        let created = try CUDNNConvolution(context: context, storageType: storageType)
        cudnnConvolution = created
        return created
    }

    private func cudnnIfWanted() throws -> CUDNNConvolution? {
        switch convolutionBackend {
        case .im2colGEMM, .direct: return nil
        case .cudnn, .automatic, .cudnnChannelsLast:
            if let cudnnConvolution { return cudnnConvolution }
            if cudnnUnavailable != nil && convolutionBackend == .automatic { return nil }
            do {
                cudnnConvolution = try CUDNNConvolution(context: context, storageType: storageType)
                return cudnnConvolution
            } catch {
                if convolutionBackend != .automatic { throw error }
                cudnnUnavailable = error
                return nil
            }
        }
    }

    /// im2col into [C·kh·kw, OH·OW] per image (skipped for 1×1 stride-1 convolutions), then one GEMM per image.
    private func im2colConvolution(_ x: CUDATensor, weight: CUDATensor, into y: CUDATensor, stride: Int, padding: Int) throws {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let o = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3], oh = y.shape[2], ow = y.shape[3]
        let ck = c * kh * kw, hw = oh * ow
        var columns = x
        if !(kh == 1 && kw == 1 && stride == 1 && padding == 0) {
            columns = try output([n, ck, hw])
            let total = n * ck * hw
            try compiler.launch(basic("im2col"), grid: elementwiseGrid(total), block: (256, 1, 1), [
                .tensor(x), .tensor(columns), .int64(Int64(total)), .int(c), .int(h), .int(w), .int(kh), .int(kw),
                .int(stride), .int(padding), .int(oh), .int(ow)])
        }
        // Column-major per image: yᵀ[hw, o] = colsᵀ[hw, ck] · Wᵀ[ck, o]. One GEMM per image (the weight is
        // shared; a zero batch stride is not documented for cuBLASLt layouts).
        let problem = CUDAMatmul.Problem(m: hw, n: o, k: ck, transA: false, transB: false, lda: hw, ldb: ck, ldd: hw,
                                         epilogue: .none)
        for image in 0..<n {
            try matmul.run(problem, a: columns.address + UInt64(image * ck * hw * 2), b: weight.address,
                           d: y.address + UInt64(image * o * hw * 2))
        }
    }

    // MARK: Normalisation

    /// `torch.nn.GroupNorm` on NCHW, optionally followed by SiLU. weight/bias: [C] (FP16). Large groups are
    /// split over several blocks (chunk statistics merged with Chan's formula), small ones take one block each.
    public func groupNorm(_ x: CUDATensor, groups: Int, weight: CUDATensor, bias: CUDATensor,
                          epsilon: Float, fusedSiLU: Bool = false) throws -> CUDATensor {
        try requireHalf(x, weight, bias, op: "groupNorm")
        let n = x.shape[0], c = x.shape[1], spatial = x.count / (n * c)
        guard c % groups == 0 else { throw CUDAError.invalidArgument("groupNorm: \(c) channels, \(groups) groups") }
        let y = try output(x.shape)
        let groupLength = c / groups * spatial
        let chunks = groupNormChunks(images: n, groups: groups, groupLength: groupLength)
        if chunks == 1 || splitGroupNormDisabled {
            try compiler.launch(basic("group_norm_nchw"), grid: (n * groups, 1, 1), block: (512, 1, 1), [
                .tensor(x), .tensor(weight), .tensor(bias), .tensor(y), .int(c), .int(spatial), .int(groups),
                .float(epsilon), .int32(fusedSiLU ? 1 : 0)])
            return y
        }
        let (partial, chunkLength, chunkCount) = try groupNormStatistics(x, groups: groups, chunks: chunks)
        try compiler.launch(basic("group_norm_apply"), grid: (chunkCount, n * groups, 1), block: (256, 1, 1), [
            .tensor(x), .tensor(partial), .tensor(weight), .tensor(bias), .tensor(y), .int(c), .int(spatial), .int(groups),
            .int64(Int64(groupLength)), .int(chunkLength), .float(epsilon), .int32(fusedSiLU ? 1 : 0)])
        return y
    }

    /// `groupNorm` written as the input codes of an 8-bit layer that alone reads it: channels-last [n, h, w, c]
    /// `.int8` / `.float8e4m3` codes of the normalised (and SiLU'd) values divided by `scale`, rounded from FP32 as
    /// `quantize` rounds (no 16-bit result in between). For a convolution, or a Linear layer reading the [n, h·w, c]
    /// tokens, whose SmoothQuant `factors` ([c] FP32, no SiLU) multiply the values first.
    package func groupNorm(_ x: CUDATensor, groups: Int, weight: CUDATensor, bias: CUDATensor, epsilon: Float, fusedSiLU: Bool,
                           channelsLastCodes format: QuantizedFormat, scale: Float, factors: CUDATensor? = nil) throws -> CUDATensor {
        try requireHalf(x, weight, bias, op: "groupNorm")
        guard x.shape.count == 4, groups > 0, x.shape[1] % groups == 0, x.shape[1] % 4 == 0, weight.count == x.shape[1],
              bias.count == x.shape[1], scale.isFinite, scale > 0,
              factors.map({ $0.count == x.shape[1] && $0.dtype == .float32 && !fusedSiLU }) ?? true else {
            throw CUDAError.invalidArgument("groupNorm to codes: input \(x.shape), \(groups) groups, \(weight.count) weights, scale \(scale)"
                                            + (factors.map { ", \($0.count) factors\(fusedSiLU ? " with SiLU" : "")" } ?? ""))
        }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let groupLength = c / groups * h * w
        let chunks = groupNormChunks(images: n, groups: groups, groupLength: groupLength)
        let (partial, chunkLength, chunkCount) = try groupNormStatistics(x, groups: groups, chunks: chunks)
        let affine = try context.empty([n, c, 2], dtype: .float32)
        try compiler.launch(basic("group_norm_affine"), grid: ((n * c + 255) / 256, 1, 1), block: (256, 1, 1), [
            .tensor(partial), .tensor(weight), .tensor(bias), .pointer(factors?.address ?? 0), .tensor(affine), .int(n), .int(c), .int(groups),
            .int64(Int64(groupLength)), .int(chunkCount), .int(chunkLength), .float(epsilon)])
        let codes = try context.empty([n, h, w, c], dtype: format == .int8 ? .int8 : .float8e4m3)
        try compiler.launch(basic("group_norm_codes_channels_last"), grid: ((h * w + 63) / 64, (c + 63) / 64, n), block: (32, 8, 1), [
            .tensor(x), .tensor(affine), .tensor(codes), .int(c), .int(h * w), .int32(fusedSiLU ? 1 : 0),
            .float(scale), .int32(format == .int8 ? 0 : 1)])
        withExtendedLifetime((partial, affine)) {}
        return codes
    }

    /// Enough blocks to fill the card: each group split into chunks (≥ 2048 values, a multiple of 8).
    private func groupNormChunks(images n: Int, groups: Int, groupLength: Int) -> Int {
        max(1, min((groupLength + 2047) / 2048, (4 * context.multiprocessorCount + n * groups - 1) / (n * groups)))
    }

    /// Each (image, group)'s chunks' mean and centred sum of squares (`group_norm_stats`), FP32 [n·groups·chunks, 2].
    private func groupNormStatistics(_ x: CUDATensor, groups: Int, chunks: Int) throws -> (partial: CUDATensor, chunkLength: Int, chunkCount: Int) {
        let n = x.shape[0], groupLength = x.count / (n * groups)
        let chunkLength = ((groupLength + chunks - 1) / chunks + 7) / 8 * 8
        let chunkCount = (groupLength + chunkLength - 1) / chunkLength
        let partial = try context.empty([n * groups * chunkCount * 2], dtype: .float32)
        try compiler.launch(basic("group_norm_stats"), grid: (chunkCount, n * groups, 1), block: (256, 1, 1), [
            .tensor(x), .tensor(partial), .int64(Int64(groupLength)), .int(chunkLength)])
        return (partial, chunkLength, chunkCount)
    }

    /// Forces the one-block-per-group GroupNorm kernel (for tests and comparisons).
    public var splitGroupNormDisabled = false

    /// Makes FP8-probability attention over at most 128 keys take the two-pass kernel as longer sequences do, instead
    /// of `attention_fp8p_k128_d<D>`'s one pass (for measurements).
    package var onePassFP8AttentionDisabled = false

    /// Leaves the short-key attention kernel out of the automatic choice (for measurements against the flash kernels).
    package var shortKeyAttentionDisabled = false

    /// Transposes tokens back to NCHW (`tokensToChannels(_:height:width:_:)`) through 32×32 tiles of single halves even
    /// where the paired 64×64 form applies (for measurements against it).
    package var pairedTransposeDisabled = false

    /// Items of eight values each thread of the 16-bit → 8-bit quantize pass (`quantize`) takes, 1 to 4, their loads
    /// issued together; the grid shrinks to match. 2 was the fastest at SDXL's shapes on an H200 (other values are for
    /// measurements).
    package var quantizePassItemsPerThread = 2

    /// Whether the last FP8-probability attention made one pass over its keys, and the kernel that ran the last
    /// attention (for reports).
    package private(set) var lastFP8AttentionOnePass = false
    package private(set) var lastAttentionKernel = AttentionKernel.simple

    /// `torch.nn.LayerNorm` over the last dimension.
    public func layerNorm(_ x: CUDATensor, weight: CUDATensor, bias: CUDATensor, epsilon: Float) throws -> CUDATensor {
        try layerNorm(x, weight: weight, bias: bias, epsilon: epsilon, writing: nil)
    }

    /// What a LayerNorm needs to write `reader`'s input codes (`layerNormCodes(weight:bias:for:)`).
    package struct LayerNormCodes {
        /// The 8-bit layer that alone reads the LayerNorm's result.
        let reader: CUDAEightBitLinear
        /// FP32 [2, D]: γ·m, then β·m, per column, m = the reader's SmoothQuant factor (or 1) / its input scale.
        let affine: CUDATensor
    }

    /// The operands of a LayerNorm (γ `weight`, β `bias`) that writes `reader`'s input codes, folded once on the device;
    /// nil where the one-warp-per-row kernel or the reader does not take codes of this width.
    package func layerNormCodes(weight: CUDATensor, bias: CUDATensor, for reader: CUDAEightBitLinear) throws -> LayerNormCodes? {
        try requireHalf(weight, bias, op: "layerNorm")
        let d = weight.count
        guard d % 8 == 0, d <= 256 * Self.layerNormChunks, bias.count == d, reader.acceptsCodes(width: d) else { return nil }
        let affine = try context.empty([2, d], dtype: .float32)
        try compiler.launch(fused("layer_norm_code_affine"), grid: ((d + 255) / 256, 1, 1), block: (256, 1, 1), [
            .tensor(weight), .tensor(bias), .pointer(reader.smoothing?.address ?? 0), .float(reader.inputScale), .tensor(affine),
            .int(d)])
        return LayerNormCodes(reader: reader, affine: affine)
    }

    /// `layerNorm`; with `codes` (made from the same `weight` and `bias`) the result is returned as its reader's input
    /// codes (`quantize` of it, without the 16-bit rounding in between) when the one-warp-per-row kernel applies (check
    /// the returned dtype).
    package func layerNorm(_ x: CUDATensor, weight: CUDATensor, bias: CUDATensor, epsilon: Float,
                           writing codes: LayerNormCodes?) throws -> CUDATensor {
        try requireHalf(x, weight, bias, op: "layerNorm")
        let d = x.shape.last!
        if d % 8 == 0 && d <= 256 * Self.layerNormChunks && weight.count == d && bias.count == d {
            // One warp per row, eight rows per block, 16-byte accesses, the fewest chunks per lane that hold a row
            // (CUDAKernels+Fused).
            let rows = x.count / d
            let chunks = (d / 8 + 31) / 32
            let codes = codes.flatMap { $0.affine.count == 2 * d ? $0 : nil }
            let y = try codes.map { try context.empty(x.shape, dtype: $0.reader.codeType) } ?? output(x.shape)
            try compiler.launch(fused("layer_norm_warp\(chunks)"), grid: ((rows + 7) / 8, 1, 1), block: (256, 1, 1), [
                .tensor(x), .tensor(weight), .tensor(bias), .pointer(codes == nil ? y.address : 0), .int64(Int64(rows)), .int(d),
                .float(epsilon), .pointer(codes?.affine.address ?? 0), .pointer(codes == nil ? 0 : y.address),
                .int32(codes?.reader.format == .int8 ? 0 : 1)])
            return y
        }
        let y = try output(x.shape)
        try compiler.launch(basic("layer_norm"), grid: (x.count / d, 1, 1), block: (d >= 1024 ? 256 : 128, 1, 1), [
            .tensor(x), .tensor(weight), .tensor(bias), .tensor(y), .int(d), .float(epsilon)])
        return y
    }

    // MARK: Activations and element-wise

    private func unary(_ x: CUDATensor, op: Int32, scalar: Float = 0) throws -> CUDATensor {
        try requireHalf(x, op: "unary")
        let y = try output(x.shape)
        try compiler.launch(basic("unary"), grid: elementwiseGrid(x.count), block: (256, 1, 1), [
            .tensor(x), .tensor(y), .int64(Int64(x.count)), .int32(op), .float(scalar)])
        return y
    }

    /// SiLU (x·σ(x)).
    public func silu(_ x: CUDATensor) throws -> CUDATensor { try unary(x, op: 0) }
    /// Exact GELU (erf form).
    public func gelu(_ x: CUDATensor) throws -> CUDATensor { try unary(x, op: 1) }
    /// GELU, tanh approximation (`approximate="tanh"`).
    public func geluTanh(_ x: CUDATensor) throws -> CUDATensor { try unary(x, op: 2) }
    /// CLIP's quick GELU: x·σ(1.702x).
    public func quickGELU(_ x: CUDATensor) throws -> CUDATensor { try unary(x, op: 3) }
    /// Multiplies every element by `s`.
    public func scale(_ x: CUDATensor, _ s: Float) throws -> CUDATensor { try unary(x, op: 4, scalar: s) }

    /// diffusers' GEGLU tail: splits the last dimension in half, returns `a * gelu(b)`.
    public func geglu(_ x: CUDATensor) throws -> CUDATensor { try geglu(x, quantizingFor: nil) }

    /// `geglu(x)`; with `consumer` (an 8-bit layer that alone reads the result) the result is returned as that
    /// layer's input codes when the vectorised kernel applies (check the returned dtype).
    package func geglu(_ x: CUDATensor, quantizingFor consumer: CUDAEightBitLinear?) throws -> CUDATensor {
        try requireHalf(x, op: "geglu")
        let d2 = x.shape.last!, d = d2 / 2, rows = x.count / d2
        var shape = x.shape
        shape[shape.count - 1] = d
        if d % 8 == 0 {
            let consumer = consumer.flatMap { $0.acceptsCodes(width: d) ? $0 : nil }
            let y = try consumer.map { try context.empty(shape, dtype: $0.codeType) } ?? output(shape)
            try compiler.launch(fused("geglu_vec8"), grid: elementwiseGrid(rows * d / 8), block: (256, 1, 1), [
                .tensor(x), .pointer(consumer == nil ? y.address : 0), .int64(Int64(rows)), .int(d),
                .pointer(consumer?.smoothing?.address ?? 0), .pointer(consumer == nil ? 0 : y.address),
                .float(consumer?.inputScale ?? 1), .int32(consumer?.format == .int8 ? 0 : 1)])
            return y
        }
        let y = try output(shape)
        try compiler.launch(basic("geglu"), grid: elementwiseGrid(rows * d), block: (256, 1, 1), [
            .tensor(x), .tensor(y), .int64(Int64(rows)), .int(d)])
        return y
    }

    /// Element-wise sum of two tensors of the same shape.
    public func add(_ a: CUDATensor, _ b: CUDATensor) throws -> CUDATensor {
        try requireHalf(a, b, op: "add")
        guard a.shape == b.shape else { throw CUDAError.invalidArgument("add: shapes \(a.shape) and \(b.shape) differ") }
        let y = try output(a.shape)
        try compiler.launch(basic("add"), grid: elementwiseGrid(a.count), block: (256, 1, 1), [
            .tensor(a), .tensor(b), .tensor(y), .int64(Int64(a.count))])
        return y
    }

    /// x[n,c,:,:] += v[n,c] on NCHW (time embeddings), like `CPUKernels.addChannelBias`.
    public func addChannelBias(_ x: CUDATensor, _ v: CUDATensor) throws -> CUDATensor {
        try requireHalf(x, v, op: "addChannelBias")
        let n = x.shape[0], c = x.shape[1], spatial = x.count / (n * c)
        guard v.count == n * c else { throw CUDAError.invalidArgument("addChannelBias: \(v.shape) for \(x.shape)") }
        let y = try output(x.shape)
        try compiler.launch(basic("add_channel_bias"), grid: elementwiseGrid(x.count), block: (256, 1, 1), [
            .tensor(x), .tensor(v), .tensor(y), .int64(Int64(x.count)), .int(c), .int(spatial), .int32(1)])
        return y
    }

    /// Softmax over the last dimension.
    public func softmax(_ x: CUDATensor) throws -> CUDATensor {
        try requireHalf(x, op: "softmax")
        let d = x.shape.last!
        let y = try output(x.shape)
        try compiler.launch(basic("softmax_rows"), grid: (x.count / d, 1, 1), block: (d >= 1024 ? 256 : 128, 1, 1), [
            .tensor(x), .tensor(y), .int(d)])
        return y
    }

    // MARK: Attention

    /// Multi-head scaled dot-product attention (`F.scaled_dot_product_attention` on heads split from the
    /// channel dimension): q [B, Lq, H·D], k and v [B, Lk, H·D] → [B, Lq, H·D]. Fused (FlashAttention-2
    /// style, see `CUDAAttentionSource`); head dims in `CUDAAttentionSource.headDims`.
    public func attention(query q: CUDATensor, key k: CUDATensor, value v: CUDATensor, heads: Int,
                          scale: Float? = nil) throws -> CUDATensor {
        try requireHalf(q, k, v, op: "attention")
        let batch = q.shape[0], lq = q.shape[1], channels = q.shape[2], lk = k.shape[1]
        guard channels % heads == 0, k.shape == [batch, lk, channels], v.shape == k.shape else {
            throw CUDAError.invalidArgument("attention: q \(q.shape), k \(k.shape), v \(v.shape), \(heads) heads")
        }
        let d = channels / heads
        guard CUDAAttentionSource.headDims.contains(d) else {
            throw CUDAError.invalidArgument("attention: head dim \(d) has no kernel (have \(CUDAAttentionSource.headDims))")
        }
        return try attention(query: q.address, queryStride: channels, key: k.address, value: v.address, keyValueStride: channels,
                             batch: batch, queries: lq, keys: lk, channels: channels, heads: heads, scale: scale)
    }

    /// Attention on rows that need not be contiguous: query row `i` of image `b` starts at
    /// `query + ((b·queries + i)·queryStride)` halves, key/value rows likewise with `keyValueStride`, so fused
    /// QKV (`[B, L, 3C]`) or K/V projections of several layers at once (`[B, Lk, Σ 2C]`) are read in place.
    /// Addresses and strides must keep 16-byte alignment (multiples of 8 halves). Output: [batch, queries, channels].
    /// `fp8ProbabilityAmax`: level-4 FP8 attention, the softmax probabilities rounded to FP8 with this amax (1 when
    /// not calibrated; larger probabilities saturate at it). With `reader` (an 8-bit layer that alone reads the
    /// result) our kernels return its input codes instead (`store_attention_row`); cuDNN's returns 16 bit (check the
    /// returned dtype).
    package func attention(query: UInt64, queryStride: Int, key: UInt64, value: UInt64, keyValueStride: Int,
                   batch: Int, queries lq: Int, keys lk: Int, channels: Int, heads: Int, scale: Float? = nil,
                   fp8ProbabilityAmax: Float? = nil, writingCodesFor reader: CUDAEightBitLinear? = nil) throws -> CUDATensor {
        let fp8Probabilities = fp8ProbabilityAmax != nil
        let d = channels / heads
        guard channels % heads == 0, CUDAAttentionSource.headDims.contains(d) else {
            throw CUDAError.invalidArgument("attention: head dim \(channels)/\(heads) has no kernel (have \(CUDAAttentionSource.headDims))")
        }
        guard [query, key, value].allSatisfy({ $0 % 16 == 0 }), queryStride % 8 == 0, keyValueStride % 8 == 0 else {
            throw CUDAError.invalidArgument("attention: rows must be 16-byte aligned (strides \(queryStride), \(keyValueStride))")
        }
        let hasPipelined = CUDAAttentionSource.pipelinedHeadDims.contains(d)
        if attentionKernel == .pipelined && !hasPipelined {
            throw CUDAError.invalidArgument("attention: no pipelined kernel for head dim \(d)")
        }
        // The short-key kernel's key tile for this call, if it takes it.
        let keyTile = lk >= 1 && CUDAAttentionSource.shortKeyHeadDims.contains(d)
            ? CUDAAttentionSource.shortKeyTiles.first(where: { lk <= $0 }) : nil
        if attentionKernel == .shortKeys && keyTile == nil {
            throw CUDAError.invalidArgument("attention: no short-key kernel for \(lk) keys at head dim \(d)")
        }
        let s = scale ?? 1 / Float(d).squareRoot()
        let reader = reader.flatMap { $0.acceptsCodes(width: channels) ? $0 : nil }
        // The 16-bit output, made when a launch writes it (not for a call that writes the reader's codes).
        var sixteenBit: CUDATensor?
        func y() throws -> CUDATensor {
            if let sixteenBit { return sixteenBit }
            let made = try output([batch, lq, channels])
            sixteenBit = made
            return made
        }
        /// Whether `kernel` runs as cuDNN's 16-bit attention (its FP8-probability calls run ours).
        func runsCuDNN(_ kernel: AttentionKernel) -> Bool { kernel == .cudnn && !fp8Probabilities }
        /// Launches `kernel`; our kernels write `codes` where given.
        func launch(_ kernel: AttentionKernel, codes: CUDATensor? = nil) throws {
            if runsCuDNN(kernel) {
                let shape = CUDNNAttention.Shape(batch: batch, heads: heads, queries: lq, keys: lk, headDim: d,
                                                 queryStride: queryStride, keyValueStride: keyValueStride)
                try cudnnAttentionRegardless().forward(shape, query: query, key: key, value: value, output: y().address, scale: s)
                return
            }
            let pipelined = kernel == .pipelined, shortKeys = kernel == .shortKeys
            let variant = fp8Probabilities ? "fp8p_" : ""
            // FP8 probabilities over at most 128 keys (cross-attention): the one-pass kernel
            let onePass = fp8Probabilities && !pipelined && !onePassFP8AttentionDisabled && lk <= CUDAAttentionSource.shortKeys
                && CUDAAttentionSource.shortKeyHeadDims.contains(d)
            let name: String, blocks: Int
            if shortKeys, let keyTile {
                name = "attention_short\(keyTile)_\(variant)d\(d)"
                blocks = shortKeyBlocks(queries: lq, batchHeads: batch * heads)
                lastFP8AttentionOnePass = fp8Probabilities
            } else {
                name = pipelined ? "attention_pipelined_\(variant)d\(d)" : onePass ? "attention_fp8p_k128_d\(d)" : "attention_\(variant)d\(d)"
                blocks = (lq + (pipelined ? 127 : 63)) / (pipelined ? 128 : 64)
                lastFP8AttentionOnePass = fp8Probabilities && !pipelined && (onePass || lk <= 64)   // or all keys in its 64-key tile
            }
            let function = try compiler.function(name, module: "diffuse8_attention", source: CUDAAttentionSource.source)
            let outputAddress = codes == nil ? try y().address : 0
            var arguments: [CUDAKernelArgument] = [
                .pointer(query), .pointer(key), .pointer(value), .pointer(outputAddress), .int(heads), .int(lq), .int(lk),
                .float(s * 1.4426950408889634), .int(queryStride), .int(keyValueStride)]
            // The FP8-probability kernels' coding (the flash kernel's also a calibration pointer); the short-key kernel
            // takes it in both forms.
            if let amax = fp8ProbabilityAmax {
                arguments += Self.probabilityCoding(amax) + (pipelined || shortKeys ? [] : [.pointer(0)])
            } else if shortKeys {
                arguments += Self.probabilityCoding(1)
            }
            arguments += [.pointer(codes?.address ?? 0), .pointer(reader?.smoothing?.address ?? 0), .float(reader?.inputScale ?? 1),
                          .int32(reader?.format == .int8 ? 0 : 1)]
            try compiler.launch(function, grid: (blocks, batch * heads, 1), block: (128, 1, 1), arguments)
        }
        var kernel = attentionKernel
        var launched = false
        if kernel == .automatic {
            // The pipelined kernel is faster on long sequences but its 128-query blocks can leave SMs idle on short
            // ones; cuDNN's fused kernel wins on long sequences where it builds a plan; the short-key kernel is meant
            // for cross-attention's few keys: measure once per shape.
            let shortKeyCandidate = keyTile != nil && !shortKeyAttentionDisabled
            let shape = [d, lq, lk, batch * heads, queryStride, keyValueStride, fp8Probabilities ? 1 : 0, shortKeyCandidate ? 1 : 0]
            if let known = attentionChoice[shape] {
                kernel = known
            } else {
                var candidates: [AttentionKernel] = [.simple] + (hasPipelined ? [.pipelined] : []) + (shortKeyCandidate ? [.shortKeys] : [])
                if cudnnAttentionUnavailable == nil && d % 8 == 0 && d <= 128 && !fp8Probabilities { candidates.append(.cudnn) }
                // The kernel an earlier run measured fastest (`CUDATuningRecord`), if it is a candidate and runs.
                let key = "attention shape=\(shape.map(String.init).joined(separator: ",")) type=\(storageType.rawValue)"
                if let recorded = context.tuning.useHint(key, accept: { hint in
                    AttentionKernel(tuningCode: hint).flatMap { k in candidates.contains(k) && (try? launch(k)) != nil ? k : nil }
                }) {
                    kernel = recorded
                    launched = true
                } else {
                    // A candidate that cannot run this shape (cuDNN without a fused plan) drops out.
                    let best = CUDATuningTable.fastest(candidates) { candidate in try tuningTime { try launch(candidate) } }.best
                    kernel = best?.candidate ?? .simple
                    if best != nil { context.tuning.record(key, kernel.tuningCode, .timed) }
                }
                attentionChoice[shape] = kernel
            }
        }
        lastAttentionKernel = runsCuDNN(kernel) ? .cudnn : kernel == .shortKeys ? .shortKeys : kernel == .pipelined ? .pipelined : .simple
        if let reader, !runsCuDNN(kernel) {
            // The choice is timed on 16-bit outputs; the chosen kernel of ours then writes the reader's codes.
            let codes = try context.empty([batch, lq, channels], dtype: reader.codeType)
            try launch(kernel, codes: codes)
            return codes
        }
        if !launched { try launch(kernel) }
        return try y()
    }

    /// Blocks per (batch, head) of the short-key kernel on this card (`shortKeyBlocks(queries:batchHeads:multiprocessors:)`).
    func shortKeyBlocks(queries: Int, batchHeads: Int) -> Int {
        Self.shortKeyBlocks(queries: queries, batchHeads: batchHeads, multiprocessors: context.multiprocessorCount)
    }

    /// Blocks per (batch, head) of the short-key kernel: each of its 4 warps takes 16-query tiles in turn (tile w, then
    /// w + 4·blocks, …). The blocks of every head should fit in one wave at three blocks per multiprocessor (its
    /// registers allow three), each warp taking the same number of tiles: the fewest tiles per warp for which they fit.
    static func shortKeyBlocks(queries: Int, batchHeads: Int, multiprocessors: Int) -> Int {
        let tiles = (max(queries, 0) + 15) / 16
        let warps = 4 * 3 * max(multiprocessors, 1)
        let tilesPerWarp = max(1, (tiles * max(batchHeads, 1) + warps - 1) / warps)
        return max(1, (tiles + 4 * tilesPerWarp - 1) / (4 * tilesPerWarp))
    }

    /// `p_encode` = 448/a and `p_decode` = a/448 of the FP8-probability kernel (for a = 1 exactly 448 and 1/448).
    static func probabilityCoding(_ amax: Float) -> [CUDAKernelArgument] {
        let a: Float = amax > 0 && amax.isFinite ? amax : 1, largest = QuantizedFormat.fp8.maxValue
        return [.float(largest / a), .float(a / largest)]
    }

    /// The largest softmax probability of attention(Q, K) — max over images, heads and query rows of
    /// softmax(s·Q·Kᵀ) — computed by the first pass of the FP8-probability kernel (calibration of level-4 ranges).
    /// Rows as in `attention`; nil for head dims without a fused kernel.
    package func attentionProbabilityMax(query: UInt64, queryStride: Int, key: UInt64, keyStride: Int, batch: Int, queries lq: Int,
                                         keys lk: Int, channels: Int, heads: Int, scale: Float? = nil) throws -> Float? {
        let d = channels / heads
        guard channels % heads == 0, CUDAAttentionSource.headDims.contains(d) else { return nil }
        guard [query, key].allSatisfy({ $0 % 16 == 0 }), queryStride % 8 == 0, keyStride % 8 == 0, lq > 0, lk > 0 else {
            throw CUDAError.invalidArgument("attentionProbabilityMax: rows must be 16-byte aligned (strides \(queryStride), \(keyStride))")
        }
        let s = scale ?? 1 / Float(d).squareRoot()
        let result = try context.empty([1], dtype: .float32)
        try context.zero(result)
        let function = try compiler.function("attention_fp8p_d\(d)", module: "diffuse8_attention", source: CUDAAttentionSource.source)
        try compiler.launch(function, grid: ((lq + 63) / 64, batch * heads, 1), block: (128, 1, 1), [
            .pointer(query), .pointer(key), .pointer(key), .pointer(0), .int(heads), .int(lq), .int(lk),
            .float(s * 1.4426950408889634), .int(queryStride), .int(keyStride)] + Self.probabilityCoding(1)
            + [.tensor(result), .pointer(0), .pointer(0), .float(1), .int32(0)])
        return try context.download(result).scalars.first
    }

    /// The cuDNN attention object, created on first use (throws without cuDNN).
    func cudnnAttentionRegardless() throws -> CUDNNAttention {
        if let cudnnAttention { return cudnnAttention }
        do {
            let created = try CUDNNAttention(context: context, storageType: storageType)
            cudnnAttention = created
            return created
        } catch {
            cudnnAttentionUnavailable = error
            throw error
        }
    }

    /// Which of the execution plans cuDNN's heuristics offer its fused attention runs, in their order (0, the first;
    /// for measurements). A shape with fewer plans throws.
    package var cudnnAttentionPlanIndex: Int {
        get { cudnnAttention?.planIndex ?? 0 }
        set { (try? cudnnAttentionRegardless())?.planIndex = newValue }
    }

    /// The FP32 scratch value of `cudnnFP8Attention`'s amax(O), made on first use.
    func fp8AttentionAmax() throws -> CUDATensor {
        if let fp8AttentionAmaxScratch { return fp8AttentionAmaxScratch }
        let made = try context.empty([1], dtype: .float32)
        fp8AttentionAmaxScratch = made
        return made
    }

    /// The kernel `.automatic` chose for each shape (head dim, Lq, Lk, batch·heads, strides).
    public private(set) var attentionChoice: [[Int]: AttentionKernel] = [:]


    // MARK: Layout

    /// Concatenates NCHW tensors along channels (`torch.cat(dim=1)`): one kernel moving 16 bytes per access where each
    /// image of both parts is a multiple of 8 values, else device-to-device copies.
    public func concatChannels(_ a: CUDATensor, _ b: CUDATensor) throws -> CUDATensor {
        try requireHalf(a, b, op: "concatChannels")
        let n = a.shape[0], ca = a.shape[1], cb = b.shape[1], spatial = a.count / (n * ca)
        guard b.shape[0] == n, b.count / (n * cb) == spatial else {
            throw CUDAError.invalidArgument("concatChannels: \(a.shape) and \(b.shape)")
        }
        var shape = a.shape
        shape[1] = ca + cb
        let y = try output(shape)
        let vectorsA = ca * spatial / 8, vectorsB = cb * spatial / 8
        if (ca * spatial) % 8 == 0, (cb * spatial) % 8 == 0, n <= 65_535, vectorsA + vectorsB <= Int(Int32.max),
           [a.address, b.address, y.address].allSatisfy({ $0 % 16 == 0 }) {
            try compiler.launch(basic("concat_channels_vec8"), grid: (min((vectorsA + vectorsB + 255) / 256, 1 << 20), n, 1),
                                block: (256, 1, 1), [.tensor(a), .tensor(b), .tensor(y), .int(vectorsA), .int(vectorsB)])
            return y
        }
        try context.makeCurrent()
        for i in 0..<n {
            let base = y.address + UInt64(i * (ca + cb) * spatial * 2)
            try context.copy(from: a.address + UInt64(i * ca * spatial * 2), to: base, bytes: ca * spatial * 2)
            try context.copy(from: b.address + UInt64(i * cb * spatial * 2), to: base + UInt64(ca * spatial * 2),
                             bytes: cb * spatial * 2)
        }
        return y
    }

    private func transpose(_ x: CUDATensor, batch: Int, rows: Int, columns: Int, shape: [Int]) throws -> CUDATensor {
        let y = try output(shape)
        try compiler.launch(basic("transpose_batched"), grid: ((columns + 31) / 32, (rows + 31) / 32, batch), block: (32, 8, 1), [
            .tensor(x), .tensor(y), .int(rows), .int(columns)])
        return y
    }

    /// NCHW → [N, H·W, C].
    public func channelsToTokens(_ x: CUDATensor) throws -> CUDATensor {
        try requireHalf(x, op: "channelsToTokens")
        let n = x.shape[0], c = x.shape[1], hw = x.shape[2] * x.shape[3]
        return try transpose(x, batch: n, rows: c, columns: hw, shape: [n, hw, c])
    }

    /// [N, H·W, C] → NCHW.
    public func tokensToChannels(_ x: CUDATensor, height: Int, width: Int) throws -> CUDATensor {
        try requireHalf(x, op: "tokensToChannels")
        let n = x.shape[0], hw = x.shape[1], c = x.shape[2]
        guard hw == height * width else { throw CUDAError.invalidArgument("tokensToChannels: \(hw) tokens ≠ \(height)×\(width)") }
        return try transpose(x, batch: n, rows: hw, columns: c, shape: [n, c, height, width])
    }

    /// Nearest-neighbour 2× upsampling of NCHW.
    public func upsampleNearest2x(_ x: CUDATensor) throws -> CUDATensor {
        try requireHalf(x, op: "upsampleNearest2x")
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let y = try output([n, c, 2 * h, 2 * w])
        if w % 4 == 0 {
            let quads = x.count / 4
            try compiler.launch(basic("upsample_nearest2x_vec4"), grid: elementwiseGrid(quads), block: (256, 1, 1), [
                .tensor(x), .tensor(y), .int64(Int64(quads)), .int(w)])
            return y
        }
        try compiler.launch(basic("upsample_nearest2x"), grid: elementwiseGrid(y.count), block: (256, 1, 1), [
            .tensor(x), .tensor(y), .int64(Int64(y.count)), .int(h), .int(w)])
        return y
    }
}

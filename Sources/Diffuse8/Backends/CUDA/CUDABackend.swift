/// The model operations on an NVIDIA GPU in 16-bit storage (the context's FP16 or BF16) with FP32 arithmetic,
/// through `CUDAKernels` (cuBLASLt GEMMs, cuDNN or im2col convolutions, our NVRTC kernels).
///
/// `prepare(_:)` uploads a model's weights once, by the shared fusion plan (`FusionPlan`): stacked Q/K/V,
/// stacked time projections with conv1 biases folded in, stacked cross-attention keys/values, conv2 + shortcut
/// biases folded into the resnet's residual add, SD1.x's 1×1 projections as token GEMMs. Each layer object of the
/// model is then looked up by identity. A quantized Linear layer with a calibrated input scale runs in real 8 bit
/// (`CUDAEightBitLinear`: its stored FP8 or INT8 codes on the tensor cores, the input quantized on the device), and so
/// does such a convolution where cuDNN's 8-bit convolution is the faster path for its shape (`CUDAEightBitConvolution`).
/// The other quantized layers — dynamic scales, per-channel FP8 Linear weights, FP8 on GPUs before compute
/// capability 8.9, convolutions whose channels are not multiples of 16 — run as the CPU simulation does: SmoothQuant factors and INT8/FP8 quantize→dequantize of the input
/// on the device, then the 16-bit GEMM or convolution on the dequantized weight. Level 4 rounds Q/K/V outputs to FP8.
/// `simulatedLayers` says which layers were simulated and why; `layerReport` times each layer.
///
/// One backend holds the weights of the models prepared on it; it is not thread-safe (one `CUDAKernels`).
public final class CUDABackend: ModelBackend {
    public typealias Value = CUDATensor

    public let kernels: CUDAKernels
    public var context: CUDAContext { kernels.context }

    /// When set (non-nil), every operation is bracketed with CUDA events and its milliseconds are added here per
    /// kind ("conv 3x3", "attention self", …): device time, the operation queued behind a short wait
    /// (`CUDAKernels.holdStream`). The events synchronise: for breakdowns, not for totals.
    public var profile: [String: Double]?

    /// When set (non-nil), every Linear and Conv2d appends its name, kernel, whether it ran in 8 bit, and its
    /// milliseconds (device time between CUDA events, as for `profile`; they synchronise: for reports, not totals).
    public var layerReport: [CUDALayerTiming]?

    /// Quantized layers run as a simulation instead of in real 8 bit, with the reason (filled by `prepare`, and by
    /// the first call of a layer whose shape has no 8-bit GEMM).
    public var simulatedLayers: [(name: String, reason: String)] {
        preparedSimulated + eightBitWeights.compactMap { w in w.fallbackReason.map { (w.name, "no 8-bit GEMM: " + $0) } }
            + eightBitConvolutions.values.compactMap { w in w.sixteenBitReason.map { (w.name, $0) } }
    }
    private var preparedSimulated: [(name: String, reason: String)] = []

    /// Quantized Linear layers that run as real 8-bit GEMMs, and convolutions whose last call ran in 8 bit.
    public var eightBitLayerCount: Int {
        eightBitWeights.filter { $0.fallbackWeight == nil }.map(\.layerCount).reduce(0, +) + eightBitConvolutions.values.filter(\.runsEightBit).count
    }

    private var eightBitWeights: [CUDAEightBitLinear] { Array(eightBitLinears.values) + Array(eightBitStacks.values) }

    /// Whether quantized Linear layers run as real 8-bit GEMMs where the device allows (the default); false
    /// simulates every quantized layer (dequantized weights, fake-quantized inputs), as the CPU does.
    public let runsEightBit: Bool

    /// Whether a LayerNorm or GEGLU whose result one real 8-bit GEMM alone reads writes that GEMM's input codes
    /// itself (the default) instead of a 16-bit result the GEMM quantizes in a pass of its own. Both compute the
    /// same codes up to the 16-bit rounding the fused path skips; off is for measuring the difference.
    public var quantizesInProducers = true

    /// Whether a GroupNorm (+SiLU) read by a real 8-bit convolution writes its channels-last input codes (the
    /// default); off leaves the 16-bit result to the convolution's transposing quantize pass (for measurements).
    public var groupNormWritesCodes = true

    /// Whether a transformer's GroupNorm read by a real 8-bit `proj_in` writes that layer's token codes (the default);
    /// off transposes its 16-bit result to tokens and leaves it to `proj_in`'s quantize pass (for measurements).
    public var groupNormWritesTokenCodes = true

    /// Whether an upsampler's nearest 2× upsampling read by a real 8-bit convolution writes that convolution's
    /// channels-last input codes (the default); off writes the upsampled 16-bit tensor and leaves it to the
    /// convolution's transposing quantize pass (for measurements; the codes are the same bit for bit).
    public var upsampleWritesCodes = true

    /// Whether a resnet's real 8-bit conv1 adds its time embedding, and its 8-bit conv2 makes the block's output, in
    /// the pass that turns the convolution's channels-last result back to NCHW (the default); off runs those additions
    /// as passes of their own (for measurements; the values are the same bit for bit).
    public var fusesResnetEpilogues = true

    /// Whether level-4 self-attention may run through cuDNN's FP8 attention (`fp8Attention`). cuDNN 9.14 returned wrong
    /// tiles in calls of more than one wave of tiles, so `CUDAKernels.cudnnFP8Attention` makes calls of at most one wave
    /// (`diffuse8-cuda-selftest` checks shapes past one wave). cuDNN rounds the probabilities before normalising; off
    /// runs our level-4 kernel, which rounds them as the simulation does, at about 1.3× the UNet time (SDXL).
    public var usesCuDNNFP8Attention = CUDABackend.cudnnFP8AttentionDefault

    /// Whether level-4 Q/K/V stacks that feed cuDNN's FP8 attention skip their own rounding to the FP8 grids (its
    /// quantize pass makes the same codes from unrounded values; `leavesRoundingToCuDNN`). Saves a pass over every
    /// such stack's output (SDXL FP8 level 4: 1 ms of 30). Off rounds them first, as the simulation does; where our
    /// wgmma GEMM rounds in its epilogue, that rounds from FP32 instead of from the 16-bit output, a little closer to
    /// the simulation (`docs/PERFORMANCE.md`).
    public var skipsQKVRoundingForCuDNN = CUDABackend.skipsQKVRoundingDefault

    /// `DIFFUSE8_SKIP_QKV_ROUNDING=on|off` (read once; on when unset): the default of `skipsQKVRoundingForCuDNN`.
    public static let skipsQKVRoundingDefault: Bool =
        EnvironmentSetting.choice("DIFFUSE8_SKIP_QKV_ROUNDING", of: Switch.self).map { $0 == .on } ?? true

    /// Whether that fused FP8 attention runs our wgmma kernel (`CUDAKernels.wgmmaFP8Attention`: the same inputs,
    /// rounding and output, one launch for every head and image) instead of cuDNN's where it can (sm_90a, head dim
    /// 64). Off by default: on an H200 it is slower than cuDNN's in a CUDA graph (`docs/PERFORMANCE.md`).
    public var usesWGMMAFP8Attention = CUDABackend.wgmmaFP8AttentionDefault

    /// Whether 8-bit convolutions may run our implicit-GEMM kernel (`CUDAKernels.warpSpecializedConvolution`) where it
    /// measures fastest for a shape (the default); off chooses between cuDNN's 8-bit plan and 16 bit only.
    public var usesWGMMAConvolutions = true

    /// Whether our wgmma GEMM with GEGLU in its epilogue writes the FF output layer's input codes itself (the default);
    /// off, it writes 16 bit and that layer's quantize pass follows (for measurements against that form).
    public var gegluWritesCodes = true

    /// Whether a level-4 Q/K/V stack whose fused FP8 attention has run writes that attention's E4M3 codes in its GEMM's
    /// epilogue (the default) instead of 16 bit that the attention then quantizes in a pass of its own (for measurements
    /// against that form).
    public var qkvWritesAttentionCodes = true

    /// Whether a level-4 attention that our FP8-probability kernels run (cross-attention; self-attention where the fused
    /// FP8 attention declines) writes its real 8-bit `to_out.0`'s input codes (the default), instead of 16 bit and that
    /// layer's quantize pass (for measurements against that form). Level 3's 16-bit attention keeps the pass: writing
    /// codes from our kernels measured no faster there in a CUDA graph (`docs/PERFORMANCE.md`).
    public var attentionWritesCodes = true

    /// `DIFFUSE8_WGMMA_FP8_ATTENTION=on|off` (read once; off when unset): the default of `usesWGMMAFP8Attention`.
    public static let wgmmaFP8AttentionDefault: Bool =
        EnvironmentSetting.choice("DIFFUSE8_WGMMA_FP8_ATTENTION", of: Switch.self).map { $0 == .on } ?? false

    /// `DIFFUSE8_CUDNN_FP8_ATTENTION=on|off` (read once; on when unset): the default of `usesCuDNNFP8Attention`.
    public static let cudnnFP8AttentionDefault: Bool =
        EnvironmentSetting.choice("DIFFUSE8_CUDNN_FP8_ATTENTION", of: Switch.self).map { $0 == .on } ?? true

    private var linears: [ObjectIdentifier: CUDALinearWeights] = [:]
    private var eightBitLinears: [ObjectIdentifier: CUDAEightBitLinear] = [:]
    private var stacks: [ObjectIdentifier: CUDALinearWeights] = [:]
    private var eightBitStacks: [ObjectIdentifier: CUDAEightBitLinear] = [:]
    /// The 8-bit stack each of its member layers belongs to.
    private var eightBitStackOfMember: [ObjectIdentifier: (stack: CUDAEightBitLinear, members: Set<ObjectIdentifier>)] = [:]
    private var convolutions: [ObjectIdentifier: CUDAConvolutionWeights] = [:]
    private var eightBitConvolutions: [ObjectIdentifier: CUDAEightBitConvolution] = [:]
    private var norms: [ObjectIdentifier: CUDANormWeights] = [:]
    /// Per LayerNorm, its operands for writing its reader's input codes (made on its first such call).
    private var layerNormCodes: [ObjectIdentifier: CUDAKernels.LayerNormCodes] = [:]
    private var resnetBiases: [ObjectIdentifier: CUDATensor] = [:]
    private var plans: [ObjectIdentifier: FusionPlan] = [:]
    /// Level-4 self-attention modules that run through cuDNN's FP8 attention (decided on their first call), and
    /// those that cannot.
    private var fp8Attentions: [ObjectIdentifier: CUDAFP8Attention] = [:]
    private var fp8AttentionsDeclined: Set<ObjectIdentifier> = []
    /// The module whose fused FP8 attention read each 8-bit Q/K/V stack (once it has run).
    private var fp8AttentionOfStack: [ObjectIdentifier: MultiHeadAttention] = [:]

    /// Whether `prepare` fuses by the models' `FusionPlan` (the default); false keeps every layer on its own, so a
    /// recording wrapper (calibration) sees each one.
    public let fusesLayers: Bool

    public init(kernels: CUDAKernels, fusesLayers: Bool = true, runsEightBit: Bool = true) {
        self.kernels = kernels
        self.fusesLayers = fusesLayers
        self.runsEightBit = runsEightBit
    }

    // MARK: Preparation

    /// Uploads every weight of `unet` (fused by its `FusionPlan`).
    public func prepare(_ unet: UNet2DConditionModel) throws {
        let plan = fusesLayers ? try FusionPlan(unet) : FusionPlan()
        try prepare(unet, plan: plan, convolutions: unet.convolutionLayers, linears: unet.linearLayers,
                    groupNorms: unet.groupNorms, layerNorms: unet.layerNorms)
        // Level 4: the stacked Q/K/V of each self-attention that a fused FP8 attention may run (`fusedFP8Attention`)
        guard context.computeCapability.major >= 9 else { return }
        for module in Quantizer.attentionModules(unet) where module.usesFP8Attention && module.fp8ProbabilityAmax == 1 {
            guard let stack = plan.selfProjections[ObjectIdentifier(module)], let w = eightBitStacks[ObjectIdentifier(stack)],
                  w.outputScales != nil, let reader = eightBitLinears[ObjectIdentifier(module.output)],
                  Self.takesFP8AttentionCodes(reader) else { continue }
            w.feedsCuDNNFP8Attention = true
        }
    }

    /// Uploads every weight of a CLIP text encoder (Q/K/V stacked per layer); the embedding tables stay on the host.
    public func prepare(_ encoder: CLIPTextModel) throws {
        try prepare(encoder, plan: fusesLayers ? FusionPlan(encoder) : FusionPlan(), convolutions: [], linears: encoder.linearLayers, groupNorms: [],
                    layerNorms: encoder.layerNorms)
    }

    /// Uploads every weight of a VAE (encoder and decoder).
    public func prepare(_ vae: AutoencoderKL) throws {
        try prepare(vae, plan: fusesLayers ? FusionPlan(vae) : FusionPlan(), convolutions: vae.convolutionLayers, linears: vae.linearLayers,
                    groupNorms: vae.groupNorms, layerNorms: [])
    }

    /// The shared upload: every layer the model runs, in the form its plan runs it.
    private func prepare(_ model: AnyObject, plan: FusionPlan, convolutions: [Conv2d], linears: [Linear],
                         groupNorms: [GroupNorm], layerNorms: [LayerNorm]) throws {
        for conv in convolutions where plan.tokenProjections[ObjectIdentifier(conv)] == nil {
            let withBias = !plan.convolutionsWithoutBias.contains(ObjectIdentifier(conv))
            if let q = conv.quantization {
                let reason = runsEightBit ? CUDAEightBitConvolution.unsupportedReason(q, context: context) : "8-bit execution is off"
                if let reason {
                    preparedSimulated.append((conv.name, reason))
                } else {
                    eightBitConvolutions[ObjectIdentifier(conv)] = try CUDAEightBitConvolution(kernels, conv, q, withBias: withBias)
                    continue
                }
            }
            self.convolutions[ObjectIdentifier(conv)] = try CUDAConvolutionWeights(kernels, conv, withBias: withBias)
        }
        let stacked = Set(plan.stacks.flatMap(\.layers).map(ObjectIdentifier.init))
        for linear in linears + Array(plan.tokenProjections.values) where !stacked.contains(ObjectIdentifier(linear)) {
            if let q = linear.quantization {
                let reason = runsEightBit ? CUDAEightBitLinear.unsupportedReason(q, context: context) : "8-bit execution is off"
                if let reason {
                    preparedSimulated.append((linear.name, reason))
                } else {
                    eightBitLinears[ObjectIdentifier(linear)] = try CUDAEightBitLinear(kernels, linear, q)
                    continue
                }
            }
            self.linears[ObjectIdentifier(linear)] = try CUDALinearWeights(kernels, linear)
        }
        for stack in plan.stacks {
            if let q = stack.layers.first?.quantization {
                let reason = runsEightBit ? CUDAEightBitLinear.unsupportedReason(q, context: context) : "8-bit execution is off"
                if let reason {
                    preparedSimulated += stack.layers.map { ($0.name, reason) }
                } else {
                    let w = try CUDAEightBitLinear(kernels, stacking: stack)
                    eightBitStacks[ObjectIdentifier(stack)] = w
                    let members = Set(stack.layers.map(ObjectIdentifier.init))
                    for id in members { eightBitStackOfMember[id] = (w, members) }
                    continue
                }
            }
            // dense, or quantized and simulated: the layers' (dequantized) weights stacked, the shared input quantization
            var weights = try CUDALinearWeights(kernels, weight: stack.makeWeight(), bias: stack.makeBias())
            if let q = stack.layers.first?.quantization {
                weights.quantization = q
                weights.smoothing = try q.smoothing.map { try context.upload(Tensor(shape: [$0.count], scalars: $0), dtype: .float32) }
                weights.outputScales = try CUDALinearWeights.outputScales(stack.layers.compactMap(\.quantization), context: context)
            }
            stacks[ObjectIdentifier(stack)] = weights
        }
        for (id, bias) in plan.resnetOutputBias { resnetBiases[id] = try kernels.upload(bias) }
        for layer in plan.tokenProjections.values { layer.releaseHostWeight() }  // device-only views of convolutions
        for norm in groupNorms { norms[ObjectIdentifier(norm)] = try CUDANormWeights(kernels, norm) }
        for norm in layerNorms { norms[ObjectIdentifier(norm)] = try CUDANormWeights(kernels, norm) }
        plans[ObjectIdentifier(model)] = plan
    }

    public func fusionPlan(for model: AnyObject) -> FusionPlan? { plans[ObjectIdentifier(model)] }

    /// Frees, for every 3×3 convolution, the weight layout (NCHW or channels-last) its measured fastest path does
    /// not use (both are uploaded because the choice is made per shape on first use). Call after one forward at the
    /// size you will use. Returns the bytes freed (back to the allocator's cache).
    @discardableResult
    public func releaseUnusedWeightLayouts() -> Int {
        CUDAConvolutionWeights.releaseUnusedLayouts(Array(convolutions.values) + eightBitConvolutions.values.compactMap(\.sixteenBit))
    }

    // MARK: Data

    public func shape(of x: CUDATensor) -> [Int] { x.shape }
    public func upload(_ x: Tensor) throws -> CUDATensor { try kernels.upload(x) }
    public func download(_ x: CUDATensor) throws -> Tensor { try context.download(x) }

    public func reshape(_ x: CUDATensor, _ shape: [Int]) throws -> CUDATensor {
        guard shape.reduce(1, *) == x.count else { throw CUDAError.invalidArgument("reshape \(x.shape) → \(shape) changes the element count") }
        return x.reshaped(shape)
    }

    // MARK: Layers

    public func linear(_ x: CUDATensor, _ layer: Linear, residual: CUDATensor?) throws -> CUDATensor {
        if let w = eightBitLinears[ObjectIdentifier(layer)] {
            return try eightBitLinear(x, w, name: layer.name, residual: residual)
        }
        guard let w = linears[ObjectIdentifier(layer)] else { throw unprepared(layer.name) }
        return try op("GEMM (linear)", layer: layer.name, kernel: {
            w.quantization == nil ? "cuBLASLt 16-bit" : "cuBLASLt 16-bit, 8-bit input simulated"
        }, eightBit: { false }) {
            guard let q = w.quantization else { return try kernels.linear(x, weight: w.weight, bias: w.bias, residual: residual) }
            let input = try kernels.fakeQuantize(x, format: q.format, amax: q.inputAmax, smoothing: w.smoothing,
                                                 groupSize: q.kind == .linear ? layer.inFeatures : x.count / max(x.shape[0], 1))
            var y = try kernels.linear(input, weight: w.weight, bias: w.bias, residual: residual)
            if let amax = q.outputAmax { y = try kernels.fakeQuantize(y, format: .fp8, amax: amax, smoothing: nil, groupSize: 0) }
            return y
        }
    }

    public func stackedLinear(_ x: CUDATensor, _ stack: LinearStack) throws -> CUDATensor {
        let name = (stack.layers.first?.name ?? "") + (stack.layers.count > 1 ? " (+\(stack.layers.count - 1) stacked)" : "")
        if let w = eightBitStacks[ObjectIdentifier(stack)] {
            return try eightBitLinear(x, w, name: name, residual: nil, roundsOutput: !leavesRoundingToCuDNN(w),
                                      readerCodes: attentionReadingCodes(of: w, tokens: x.shape)?.stackCodes)
        }
        guard let w = stacks[ObjectIdentifier(stack)] else { throw unprepared(stack.layers.map(\.name).joined(separator: "+")) }
        return try op("GEMM (linear)", layer: name, kernel: {
            w.quantization == nil ? "cuBLASLt 16-bit, stacked" : "cuBLASLt 16-bit, stacked, 8-bit input simulated"
        }, eightBit: { false }) {
            guard let q = w.quantization else { return try kernels.linear(x, weight: w.weight, bias: w.bias) }
            let input = try kernels.fakeQuantize(x, format: q.format, amax: q.inputAmax, smoothing: w.smoothing, groupSize: stack.inFeatures)
            let y = try kernels.linear(input, weight: w.weight, bias: w.bias)
            return try w.outputScales.map { try kernels.fakeQuantizeColumns(y, format: .fp8, scales: $0) } ?? y
        }
    }

    /// Whether the level-4 Q/K/V stack `w` leaves the rounding of its output to cuDNN's FP8 attention, whose quantize
    /// pass makes the same codes from the unrounded values; `fp8Attention` rounds them itself where cuDNN then
    /// declines.
    private func leavesRoundingToCuDNN(_ w: CUDAEightBitLinear) -> Bool {
        w.feedsCuDNNFP8Attention && skipsQKVRoundingForCuDNN && usesCuDNNFP8Attention && quantizesInProducers
    }

    /// The fused FP8 attention that reads the stack `w`'s output, where it has run and runs again on these tokens
    /// [B, L, C]: the stack then writes the attention's codes (`qkvWritesAttentionCodes`).
    private func attentionReadingCodes(of w: CUDAEightBitLinear, tokens: [Int]) -> CUDAFP8Attention? {
        guard qkvWritesAttentionCodes, leavesRoundingToCuDNN(w), tokens.count == 3,
              let module = fp8AttentionOfStack[ObjectIdentifier(w)], let fused = fp8Attentions[ObjectIdentifier(module)],
              fused.hasRun, fused.fallbackReason == nil,
              runsFusedFP8Attention(channels: module.query.outFeatures, heads: module.heads, queries: tokens[1],
                                    probabilityAmax: module.fp8ProbabilityAmax) else { return nil }
        return fused
    }

    /// Whether the fused FP8 attention (cuDNN's, or our wgmma kernel with `usesWGMMAFP8Attention`) takes a self-attention
    /// of this shape, given a stacked Q/K/V.
    private func runsFusedFP8Attention(channels: Int, heads: Int, queries: Int, probabilityAmax: Float) -> Bool {
        guard usesCuDNNFP8Attention, quantizesInProducers, heads > 0, channels % heads == 0, probabilityAmax == 1 else { return false }
        return usesWGMMAFP8Attention && kernels.runsWGMMAFP8Attention(headDim: channels / heads)
            || kernels.runsFP8Attention(headDim: channels / heads, queries: queries)
    }

    /// A real 8-bit layer (or stack), reported under `name`.
    private func eightBitLinear(_ x: CUDATensor, _ w: CUDAEightBitLinear, name: String, residual: CUDATensor?,
                                roundsOutput: Bool = true, readerCodes: CUDAKernels.ReaderCodes? = nil) throws -> CUDATensor {
        try op("GEMM (linear)", layer: name, kernel: {
            guard w.fallbackWeight == nil, let path = w.lastGEMMPath else {
                return w.fallbackWeight != nil ? "cuBLASLt 16-bit (no 8-bit algorithm)" : "8 bit (not run yet)"
            }
            let rounding = w.outputScales == nil ? ""
                : w.lastReaderCodes == .epilogue ? ", writes the attention's FP8 codes"
                : w.lastReaderCodes == .pass ? ", then the attention's quantize pass"
                : !w.lastCallRounded ? ", FP8 rounding left to the attention's quantize pass"
                : path.roundsOutput ? ", FP8 output rounding fused" : ", then the FP8 rounding pass"
            return path.description(for: w.format) + rounding
        }, eightBit: { w.fallbackWeight == nil }) {
            try kernels.eightBitLinear(x, w, residual: residual, roundsOutput: roundsOutput, readerCodes: readerCodes)
        }
    }

    public func conv2d(_ x: CUDATensor, _ layer: Conv2d) throws -> CUDATensor {
        try conv2d(x, layer, epilogue: .channels)
    }

    /// `conv2d`; a real 8-bit convolution applies `epilogue` as it writes its NCHW result, any other after it.
    private func conv2d(_ x: CUDATensor, _ layer: Conv2d, epilogue: CUDAConvolutionOutput) throws -> CUDATensor {
        if let w = eightBitConvolutions[ObjectIdentifier(layer)] {
            return try op(w.kernelHeight == 1 ? "conv 1x1" : "conv 3x3", layer: layer.name, kernel: { w.lastKernelDescription },
                          eightBit: { w.runsEightBit }) {
                try kernels.eightBitConvolution(x, w, allowsWGMMA: usesWGMMAConvolutions, epilogue: epilogue)
            }
        }
        guard case .channels = epilogue else {
            let y = try conv2d(x, layer, epilogue: .channels)
            return try op("element-wise") { try kernels.finish(y, epilogue) }
        }
        guard let w = convolutions[ObjectIdentifier(layer)] else { throw unprepared(layer.name) }
        return try op(w.weight.shape[2] == 1 ? "conv 1x1" : "conv 3x3", layer: layer.name, kernel: {
            let path = switch w.lastPath {
            case .cudnn: "cuDNN 16-bit NCHW"
            case .cudnnChannelsLast: "cuDNN 16-bit NHWC"
            case .direct: "direct 16-bit (few channels, FP32 sums)"
            case .im2colGEMM: "im2col + cuBLASLt 16-bit"
            case nil: "convolution"
            }
            return path + (layer.quantization == nil ? "" : ", 8-bit input simulated")
        }, eightBit: { false }) {
            var input = x
            if let q = layer.quantization {
                input = try kernels.fakeQuantize(x, format: q.format, amax: q.inputAmax, smoothing: nil,
                                                 groupSize: x.count / max(x.shape[0], 1))
            }
            let y = try kernels.conv2d(input, weight: w.weight, bias: w.bias, stride: w.stride, padding: w.padding,
                                       weightChannelsLast: w.weightChannelsLast, forceChannelsLast: w.onlyChannelsLast)
            w.lastPath = kernels.lastConvolutionPath
            return y
        }
    }

    public func groupNorm(_ x: CUDATensor, _ norm: GroupNorm, silu: Bool) throws -> CUDATensor {
        guard let n = norms[ObjectIdentifier(norm)] else { throw unprepared(norm.name) }
        return try op("groupNorm") { try kernels.groupNorm(x, groups: n.groups, weight: n.weight, bias: n.bias, epsilon: n.epsilon, fusedSiLU: silu) }
    }

    /// When `reader` is a real 8-bit convolution whose path for this input is 8-bit (chosen on its first call), the
    /// GroupNorm writes its channels-last input codes directly, so the convolution skips its transposing quantize pass.
    public func groupNorm(_ x: CUDATensor, _ norm: GroupNorm, silu: Bool, readBy reader: Conv2d) throws -> CUDATensor {
        guard quantizesInProducers, groupNormWritesCodes, let w = eightBitConvolutions[ObjectIdentifier(reader)],
              w.takesCodes(forInput: x.shape, allowsWGMMA: usesWGMMAConvolutions) else {
            return try groupNorm(x, norm, silu: silu)
        }
        guard let n = norms[ObjectIdentifier(norm)] else { throw unprepared(norm.name) }
        return try op("groupNorm") {
            try kernels.groupNorm(x, groups: n.groups, weight: n.weight, bias: n.bias, epsilon: n.epsilon, fusedSiLU: silu,
                                  channelsLastCodes: w.format, scale: w.inputScale)
        }
    }

    /// When `reader` is a lone real 8-bit Linear layer, the GroupNorm writes its input codes as [n, h·w, c] tokens
    /// (SmoothQuant factors and scale applied in FP32), so neither the transpose to tokens nor its quantize pass runs.
    public func groupNormTokens(_ x: CUDATensor, _ norm: GroupNorm, readBy reader: Linear) throws -> CUDATensor {
        let shape = x.shape
        guard quantizesInProducers, groupNormWritesTokenCodes, shape.count == 4, shape[1] % 4 == 0,
              let w = eightBitLinears[ObjectIdentifier(reader)], w.acceptsCodes(width: shape[1]) else {
            return try channelsToTokens(groupNorm(x, norm, silu: false))
        }
        guard let n = norms[ObjectIdentifier(norm)] else { throw unprepared(norm.name) }
        return try op("groupNorm") {
            try kernels.groupNorm(x, groups: n.groups, weight: n.weight, bias: n.bias, epsilon: n.epsilon, fusedSiLU: false,
                                  channelsLastCodes: w.format, scale: w.inputScale, factors: w.smoothing)
                .reshaped([shape[0], shape[2] * shape[3], shape[1]])
        }
    }

    public func layerNorm(_ x: CUDATensor, _ norm: LayerNorm) throws -> CUDATensor {
        try layerNorm(x, norm, readBy: [])
    }

    /// When `readers` run as one real 8-bit GEMM (a lone layer, or exactly the members of a stack), the LayerNorm
    /// writes their input codes directly (SmoothQuant factors and scale applied in the kernel).
    public func layerNorm(_ x: CUDATensor, _ norm: LayerNorm, readBy readers: [Linear]) throws -> CUDATensor {
        guard let n = norms[ObjectIdentifier(norm)] else { throw unprepared(norm.name) }
        var codes: CUDAKernels.LayerNormCodes?
        if let reader = eightBitReader(readers) {
            if let known = layerNormCodes[ObjectIdentifier(norm)], known.reader === reader {
                codes = known
            } else {
                codes = try kernels.layerNormCodes(weight: n.weight, bias: n.bias, for: reader)
                layerNormCodes[ObjectIdentifier(norm)] = codes
            }
        }
        return try op("layerNorm") { try kernels.layerNorm(x, weight: n.weight, bias: n.bias, epsilon: n.epsilon, writing: codes) }
    }

    /// An 8-bit projection runs `CUDAKernels.eightBitGEGLU` (the GEMM with GEGLU in its epilogue where that measured
    /// faster), reported as one operation of its own class; any other runs as `linear`, then `geglu`.
    public func gegluProjection(_ x: CUDATensor, _ projection: Linear, readBy reader: Linear) throws -> CUDATensor {
        guard let w = eightBitLinears[ObjectIdentifier(projection)], w.outputScales == nil else {
            return try geglu(linear(x, projection, residual: nil), readBy: reader)
        }
        return try op("GEMM + GEGLU", layer: projection.name, kernel: {
            if let path = w.lastGEGLUPath, case .fused = path {
                return path.description(for: w.format) + (w.lastGEGLUWroteCodes ? ", codes out" : "")
            }
            return (w.lastGEMMPath?.description(for: w.format) ?? "8 bit") + ", then the GEGLU kernel"
        }, eightBit: { w.fallbackWeight == nil }) {
            try kernels.eightBitGEGLU(x, w, reader: eightBitReader([reader]), writesCodes: gegluWritesCodes)
        }
    }

    public func geglu(_ x: CUDATensor, readBy reader: Linear) throws -> CUDATensor {
        try op("GEGLU") { try kernels.geglu(x, quantizingFor: eightBitReader([reader])) }
    }

    /// The one real 8-bit GEMM that `readers` are, if they are one.
    private func eightBitReader(_ readers: [Linear]) -> CUDAEightBitLinear? {
        guard quantizesInProducers, let first = readers.first else { return nil }
        if readers.count == 1, let w = eightBitLinears[ObjectIdentifier(first)] { return w }
        guard let (w, members) = eightBitStackOfMember[ObjectIdentifier(first)], members == Set(readers.map(ObjectIdentifier.init)) else { return nil }
        return w
    }

    public func attention(query: Columns<CUDATensor>, key: Columns<CUDATensor>, value: Columns<CUDATensor>, heads: Int,
                          causal: Bool, fp8: Bool) throws -> CUDATensor {
        try attention(query: query, key: key, value: value, heads: heads, causal: causal, fp8ProbabilityAmax: fp8 ? 1 : nil, module: nil)
    }

    /// 16-bit attention, reported per layer under `module`'s name.
    public func attention(query: Columns<CUDATensor>, key: Columns<CUDATensor>, value: Columns<CUDATensor>, heads: Int,
                          module: MultiHeadAttention) throws -> CUDATensor {
        try attention(query: query, key: key, value: value, heads: heads, causal: false, fp8ProbabilityAmax: nil, module: module)
    }

    /// With `usesCuDNNFP8Attention`, self-attention whose Q/K/V come from one stacked projection and whose `to_out.0` is
    /// a real FP8 GEMM runs through cuDNN's FP8 attention (Hopper or newer, head dims that are multiples of 16), or with
    /// `usesWGMMAFP8Attention` our wgmma kernel that rounds alike (sm_90a, head dim 64), returning `to_out.0`'s input codes.
    /// cuDNN rounds the probabilities inside its flash loop, before normalising, so it agrees with the simulation (which
    /// rounds normalised ones) to a few percent per attention output rather than to rounding; calibrated probability
    /// ranges (a_P < 1, which would saturate those unnormalised values) are left to our kernel. Any other attention, and
    /// shapes cuDNN has no FP8 plan for, run our level-4 kernel, which rounds exactly as the simulation does.
    public func fp8Attention(query: Columns<CUDATensor>, key: Columns<CUDATensor>, value: Columns<CUDATensor>, heads: Int,
                             probabilityAmax: Float, module: MultiHeadAttention) throws -> CUDATensor {
        if let codes = try fusedFP8Attention(query: query, key: key, value: value, heads: heads, probabilityAmax: probabilityAmax,
                                             module: module) {
            return codes
        }
        guard query.tensor.dtype != .float8e4m3 else {
            throw CUDAError.invalidArgument("\(module.name): its Q/K/V stack wrote FP8 codes, but the fused FP8 attention did not run it")
        }
        if let stack = eightBitStackOfMember[ObjectIdentifier(module.query)]?.stack, leavesRoundingToCuDNN(stack),
           let scales = stack.outputScales, query.tensor.address == key.tensor.address {
            // The stack left its rounding to cuDNN, which declined this call: our kernel reads FP8-rounded Q/K/V.
            _ = try op("element-wise") { try kernels.fakeQuantizeColumns(query.tensor, format: .fp8, scales: scales, into: query.tensor) }
        }
        return try attention(query: query, key: key, value: value, heads: heads, causal: false, fp8ProbabilityAmax: probabilityAmax,
                             module: module, reader: attentionWritesCodes ? eightBitReader([module.output]) : nil)
    }

    /// Whether `reader` (a module's `to_out.0`) can take cuDNN's FP8 attention output as its input codes: a real FP8
    /// GEMM without SmoothQuant factors, whose input quantizer is then the graph's output scale.
    private static func takesFP8AttentionCodes(_ reader: CUDAEightBitLinear) -> Bool {
        reader.format == .fp8 && reader.smoothing == nil
    }

    /// `fp8Attention` on E4M3 codes of the stacked Q/K/V, through cuDNN's FP8 attention or our wgmma kernel
    /// (`usesWGMMAFP8Attention`), or nil where neither applies (see there).
    private func fusedFP8Attention(query: Columns<CUDATensor>, key: Columns<CUDATensor>, value: Columns<CUDATensor>, heads: Int,
                                   probabilityAmax: Float, module: MultiHeadAttention) throws -> CUDATensor? {
        let stack = query.tensor, channels = query.width
        guard key.tensor.address == stack.address, value.tensor.address == stack.address, key.tensor.shape == stack.shape,
              value.tensor.shape == stack.shape, stack.shape.count == 3, stack.shape[2] == 3 * channels,
              query.offset == 0, key.offset == channels, value.offset == 2 * channels, key.width == channels, value.width == channels,
              runsFusedFP8Attention(channels: channels, heads: heads, queries: stack.shape[1], probabilityAmax: probabilityAmax) else { return nil }
        let ours = usesWGMMAFP8Attention && kernels.runsWGMMAFP8Attention(headDim: channels / heads)
        let id = ObjectIdentifier(module)
        let fused: CUDAFP8Attention
        if let known = fp8Attentions[id] {
            fused = known
        } else {
            guard !fp8AttentionsDeclined.contains(id), let reader = eightBitReader([module.output]), Self.takesFP8AttentionCodes(reader),
                  reader.acceptsCodes(width: channels),
                  let made = try CUDAFP8Attention(kernels, module, reader: reader) else {
                fp8AttentionsDeclined.insert(id)
                return nil
            }
            fp8Attentions[id] = made
            fused = made
        }
        guard fused.fallbackReason == nil else { return nil }
        do {
            let codes = try op("attention self", layer: fused.name,
                               kernel: { ours ? "wgmma FP8 E4M3 fused attention" : "cuDNN FP8 E4M3 fused attention" }, eightBit: { true }) {
                // the stack's codes, from its GEMM (`attentionReadingCodes`) or from its 16-bit output
                let qkv = stack.dtype == fused.stackCodes.codeType ? stack
                    : try kernels.quantize(stack, as: fused.stackCodes)
                return try withExtendedLifetime(qkv) {
                    let run = ours ? kernels.wgmmaFP8Attention : kernels.cudnnFP8Attention
                    return try run(qkv.address, 3 * channels, qkv.address + UInt64(channels), qkv.address + UInt64(2 * channels),
                                   3 * channels, stack.shape[0], stack.shape[1], stack.shape[1], channels, heads, fused.scales)
                }
            }
            fused.hasRun = true
            if let w = eightBitStackOfMember[ObjectIdentifier(module.query)]?.stack { fp8AttentionOfStack[ObjectIdentifier(w)] = module }
            return codes
        } catch where !fused.hasRun {
            fused.fallbackReason = "\(error)"
            return nil
        }
    }

    /// The first pass of the FP8-probability kernel on the device (nil for head dims without a fused kernel).
    public func attentionProbabilityMax(query: Columns<CUDATensor>, key: Columns<CUDATensor>, heads: Int) throws -> Float? {
        let q = query.tensor, k = key.tensor
        guard q.shape.count == 3, k.shape.count == 3, q.shape[0] == k.shape[0], query.width == key.width, heads > 0,
              query.width % heads == 0 else {
            throw CUDAError.invalidArgument("attentionProbabilityMax: query \(q.shape)[\(query.offset)+\(query.width)], key \(k.shape)[\(key.offset)+\(key.width)], \(heads) heads")
        }
        let elementBytes = UInt64(q.dtype.byteSize)
        return try withExtendedLifetime((q, k)) {
            try kernels.attentionProbabilityMax(query: q.address + UInt64(query.offset) * elementBytes, queryStride: q.shape[2],
                                                key: k.address + UInt64(key.offset) * elementBytes, keyStride: k.shape[2],
                                                batch: q.shape[0], queries: q.shape[1], keys: k.shape[1], channels: query.width,
                                                heads: heads)
        }
    }

    /// Our kernels; a level-4 `module` is reported per layer (why cuDNN's FP8 attention did not run it, if it was tried).
    /// With `reader`, the fused kernels may return its input codes (`CUDAKernels.attention(writingCodesFor:)`).
    private func attention(query: Columns<CUDATensor>, key: Columns<CUDATensor>, value: Columns<CUDATensor>, heads: Int,
                           causal: Bool, fp8ProbabilityAmax: Float?, module: MultiHeadAttention?,
                           reader: CUDAEightBitLinear? = nil) throws -> CUDATensor {
        let q = query.tensor, k = key.tensor
        guard q.shape.count == 3, k.shape.count == 3, value.tensor.shape.count == 3, q.shape[0] == k.shape[0],
              let keyValueStride = k.shape.last, value.tensor.shape.last == keyValueStride, k.shape[1] == value.tensor.shape[1],
              query.width == key.width, key.width == value.width, heads > 0, query.width % heads == 0 else {
            throw CUDAError.invalidArgument("attention: query \(q.shape)[\(query.offset)+\(query.width)], key \(k.shape)[\(key.offset)+\(key.width)], value \(value.tensor.shape)[\(value.offset)+\(value.width)], \(heads) heads")
        }
        let elementBytes = UInt64(q.dtype.byteSize)
        let batch = q.shape[0], queries = q.shape[1], keys = k.shape[1], channels = query.width
        let fused = CUDAAttentionSource.headDims.contains(channels / heads)
        // The report's name and text are built only while reporting (this runs for every attention of every forward).
        return try op(queries == keys ? "attention self" : "attention cross", layer: layerReport == nil ? nil : module?.name, kernel: {
            let reason = module.flatMap { fp8Attentions[ObjectIdentifier($0)]?.fallbackReason }.map { " (cuDNN: \($0))" } ?? ""
            let codes = reader?.acceptsCodes(width: channels) == true ? ", writes to_out.0's codes" : ""
            let kernel = switch kernels.lastAttentionKernel {
            case .cudnn: "cuDNN fused attention, "
            case .shortKeys: "short-key kernel, "
            case .pipelined: "pipelined flash kernel, "
            default: "flash kernel, "
            }
            let probabilities = fp8ProbabilityAmax == nil ? ""
                : ", FP8-rounded probabilities, \(kernels.lastFP8AttentionOnePass ? "one pass" : "two passes")"
            return kernel + "16-bit tensor cores" + probabilities + codes + reason
        }, eightBit: { false }) {
            try withExtendedLifetime((q, k, value.tensor)) {
                let queryAddress = q.address + UInt64(query.offset) * elementBytes
                let keyAddress = k.address + UInt64(key.offset) * elementBytes
                let valueAddress = value.tensor.address + UInt64(value.offset) * elementBytes
                if causal {
                    // CLIP: short causal sequences, one stride for Q, K and V (a fused Q/K/V product).
                    guard q.shape[2] == keyValueStride, queries == keys else {
                        throw CUDAError.invalidArgument("attention: causal attention needs Q, K and V of one stride and length")
                    }
                    return try kernels.shortAttention(query: queryAddress, key: keyAddress, value: valueAddress, stride: keyValueStride,
                                                      batch: batch, length: queries, channels: channels, heads: heads, causal: true)
                }
                if fused {
                    // Level 4: Q, K and V arrive FP8-rounded from their projections; the kernel rounds the probabilities.
                    return try kernels.attention(query: queryAddress, queryStride: q.shape[2], key: keyAddress, value: valueAddress,
                                                 keyValueStride: keyValueStride, batch: batch, queries: queries, keys: keys,
                                                 channels: channels, heads: heads, fp8ProbabilityAmax: fp8ProbabilityAmax,
                                                 writingCodesFor: reader)
                }
                // Head dims without a fused kernel: the GEMM path (its softmax rounds the normalised probabilities to
                // FP8 at level 4, exactly as the simulation).
                return try kernels.gemmAttention(query: queryAddress, queryStride: q.shape[2], key: keyAddress, value: valueAddress,
                                                 keyValueStride: keyValueStride, batch: batch, queries: queries, keys: keys,
                                                 channels: channels, heads: heads, fp8ProbabilityAmax: fp8ProbabilityAmax)
            }
        }
    }

    // MARK: Element-wise

    public func silu(_ x: CUDATensor) throws -> CUDATensor { try op("element-wise") { try kernels.silu(x) } }
    public func gelu(_ x: CUDATensor) throws -> CUDATensor { try op("element-wise") { try kernels.gelu(x) } }
    public func quickGELU(_ x: CUDATensor) throws -> CUDATensor { try op("element-wise") { try kernels.quickGELU(x) } }
    public func geglu(_ x: CUDATensor) throws -> CUDATensor { try op("GEGLU") { try kernels.geglu(x) } }
    public func add(_ a: CUDATensor, _ b: CUDATensor) throws -> CUDATensor { try op("element-wise") { try kernels.add(a, b) } }

    public func affine(_ x: CUDATensor, scale: Float, shift: Float) throws -> CUDATensor {
        try op("element-wise") { try kernels.affine(x, scale: scale, shift: shift) }
    }

    public func addChannelVector(_ x: CUDATensor, _ rows: CUDATensor, offset: Int) throws -> CUDATensor {
        guard x.shape.count == 4, rows.shape.count == 2, rows.shape[0] == x.shape[0] else {
            throw CUDAError.invalidArgument("addChannelVector: rows \(rows.shape) for \(x.shape)")
        }
        return try op("element-wise") { try kernels.addChannelVector(x, rows, offset: offset, stride: rows.shape[1]) }
    }

    public func resnetOutput(_ h: CUDATensor, residual: CUDATensor, block: ResnetBlock2D) throws -> CUDATensor {
        try op("element-wise") { try kernels.finish(h, resnetOutput(residual: residual, block: block)) }
    }

    private func resnetOutput(residual: CUDATensor, block: ResnetBlock2D) -> CUDAConvolutionOutput {
        .addingResidual(residual, bias: resnetBiases[ObjectIdentifier(block)], scale: 1 / block.outputScaleFactor)
    }

    /// A real 8-bit conv1 adds the time embedding in the pass that turns its channels-last result back to NCHW.
    public func conv2d(_ x: CUDATensor, _ layer: Conv2d, addingChannelVector rows: CUDATensor, offset: Int) throws -> CUDATensor {
        guard fusesResnetEpilogues, eightBitConvolutions[ObjectIdentifier(layer)] != nil else {
            return try addChannelVector(conv2d(x, layer), rows, offset: offset)
        }
        guard rows.shape.count == 2, x.shape.count == 4, rows.shape[0] == x.shape[0] else {
            throw CUDAError.invalidArgument("\(layer.name): channel vectors \(rows.shape) for input \(x.shape)")
        }
        return try conv2d(x, layer, epilogue: .addingChannelVector(rows, offset: offset))
    }

    /// A real 8-bit conv2 makes the resnet's output in the pass that turns its channels-last result back to NCHW.
    public func resnetOutput(convolving h: CUDATensor, _ layer: Conv2d, residual: CUDATensor, block: ResnetBlock2D) throws -> CUDATensor {
        guard fusesResnetEpilogues, eightBitConvolutions[ObjectIdentifier(layer)] != nil else {
            return try resnetOutput(conv2d(h, layer), residual: residual, block: block)
        }
        return try conv2d(h, layer, epilogue: resnetOutput(residual: residual, block: block))
    }

    // MARK: Layout

    public func concatChannels(_ a: CUDATensor, _ b: CUDATensor) throws -> CUDATensor {
        try op("concat") { try kernels.concatChannels(a, b) }
    }

    /// By device-to-device row copies.
    public func concatColumns(_ a: CUDATensor, _ b: CUDATensor) throws -> CUDATensor {
        guard a.shape.count == 2, b.shape.count == 2, a.shape[0] == b.shape[0], a.dtype == b.dtype else {
            throw CUDAError.invalidArgument("concatColumns: \(a.shape) and \(b.shape)")
        }
        let rows = a.shape[0], wa = a.shape[1], wb = b.shape[1], bytes = a.dtype.byteSize
        let y = try context.empty([rows, wa + wb], dtype: a.dtype)
        try context.makeCurrent()
        for r in 0..<rows {
            let base = y.address + UInt64(r * (wa + wb) * bytes)
            try context.copy(from: a.address + UInt64(r * wa * bytes), to: base, bytes: wa * bytes)
            try context.copy(from: b.address + UInt64(r * wb * bytes), to: base + UInt64(wa * bytes), bytes: wb * bytes)
        }
        return y
    }

    public func channelsToTokens(_ x: CUDATensor) throws -> CUDATensor { try op("transpose") { try kernels.channelsToTokens(x) } }

    public func tokensToChannels(_ x: CUDATensor, height: Int, width: Int, residual: CUDATensor?) throws -> CUDATensor {
        try op("transpose") {
            if let residual {
                guard residual.shape.count == 4, residual.shape[2] == height, residual.shape[3] == width else {
                    throw CUDAError.invalidArgument("tokensToChannels: residual \(residual.shape) for \(height)×\(width)")
                }
                return try kernels.tokensToChannelsAdding(x, residual: residual)
            }
            return try kernels.tokensToChannels(x, height: height, width: width)
        }
    }

    public func upsampleNearest(_ x: CUDATensor, height: Int, width: Int) throws -> CUDATensor {
        try op("upsample") {
            if x.shape.count == 4, height == 2 * x.shape[2], width == 2 * x.shape[3] { return try kernels.upsampleNearest2x(x) }
            return try kernels.resizeNearest(x, height: height, width: width)
        }
    }

    /// When `reader` is a real 8-bit convolution whose path for the upsampled shape is 8-bit (chosen on its first
    /// call), the 2× upsampling writes its channels-last input codes straight from x (a quarter of the upsampled
    /// tensor's reads, none of its 16-bit writes), so the convolution skips its transposing quantize pass.
    public func upsampleNearest(_ x: CUDATensor, height: Int, width: Int, readBy reader: Conv2d) throws -> CUDATensor {
        guard quantizesInProducers, upsampleWritesCodes, x.shape.count == 4, height == 2 * x.shape[2], width == 2 * x.shape[3],
              let w = eightBitConvolutions[ObjectIdentifier(reader)],
              w.takesCodes(forInput: [x.shape[0], x.shape[1], height, width], allowsWGMMA: usesWGMMAConvolutions) else {
            return try upsampleNearest(x, height: height, width: width)
        }
        return try op("upsample") { try kernels.upsampledChannelsLastCodes(x, format: w.format, scale: w.inputScale) }
    }

    public func padRightBottom(_ x: CUDATensor) throws -> CUDATensor { try op("element-wise") { try kernels.padRightBottom(x) } }

    /// By device-to-device row copies.
    public func gatherRows(_ x: CUDATensor, positions: [Int]) throws -> CUDATensor {
        guard x.shape.count == 3, positions.count == x.shape[0], positions.allSatisfy({ (0..<x.shape[1]).contains($0) }) else {
            throw CUDAError.invalidArgument("gatherRows: positions \(positions) of \(x.shape)")
        }
        let length = x.shape[1], hidden = x.shape[2], bytes = x.dtype.byteSize
        let y = try context.empty([positions.count, hidden], dtype: x.dtype)
        try context.makeCurrent()
        for (b, position) in positions.enumerated() {
            try context.copy(from: x.address + UInt64(((b * length + position) * hidden) * bytes),
                             to: y.address + UInt64(b * hidden * bytes), bytes: hidden * bytes)
        }
        return y
    }

    // MARK: Statistics

    public func absMax(_ x: CUDATensor) throws -> Float { try kernels.absMax(x) }
    public func columnAbsMax(_ x: CUDATensor) throws -> [Float] { try kernels.columnAbsMax(x) }
    public func rows(_ x: CUDATensor, _ indices: [Int]) throws -> [[Float]] { try context.downloadRows(x, indices) }

    // MARK: Helpers

    private func unprepared(_ name: String) -> Error {
        CUDAError.invalidArgument("CUDABackend: layer \(name) was not prepared on this backend (prepare the model first)")
    }

    /// How long the stream waits before each timed operation: longer than any operation takes to queue.
    static let timingHoldMicroseconds = 300

    /// Runs `body`, timing it into `profile` under `kind` when profiling, and into `layerReport` when `layer` is given.
    private func op<T>(_ kind: String, layer: String? = nil, kernel: () -> String = { "" }, eightBit: () -> Bool = { false },
                       _ body: () throws -> T) throws -> T {
        let reportsLayer = layer != nil && layerReport != nil
        guard profile != nil || reportsLayer else { return try body() }
        let start = try CUDAEvent(context), end = try CUDAEvent(context)
        // The operation is queued while the stream waits, then runs as in a graph replay: its device time, not the
        // host's time to launch it.
        try kernels.holdStream(microseconds: Self.timingHoldMicroseconds)
        try start.record(on: context.stream)
        let result = try body()
        // Still holding: everything was queued in time. Else something in the operation blocked the host (e.g. a
        // synchronising allocation) until the hold ended, and the time includes the host's time to queue the rest.
        let includesHostTime = try start.isComplete()
        try end.record(on: context.stream)
        let milliseconds = try end.milliseconds(since: start)
        profile?[kind, default: 0] += milliseconds
        if reportsLayer, let layer {
            layerReport?.append(CUDALayerTiming(layer: layer, kind: kind, kernel: kernel(), eightBit: eightBit(), milliseconds: milliseconds,
                                                includesHostTime: includesHostTime))
        }
        return result
    }
}

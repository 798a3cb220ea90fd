/// A quantized Linear layer held on the device in 8 bit and run as a real 8-bit GEMM (`CUDAKernels.eightBitLinear`):
/// its stored codes [out, in] (FP8 E4M3 or INT8, exactly as `diffuse8 quantize` wrote them), the calibrated input
/// scale, the SmoothQuant factors, and the scales the GEMM applies. Half the bytes of the 16-bit weight.
package final class CUDAEightBitLinear {
    let name: String
    /// How many model layers this weight runs (a stack runs several).
    let layerCount: Int
    let format: QuantizedFormat
    let inFeatures: Int
    let outFeatures: Int
    /// [out, in] codes.
    let codes: CUDATensor
    let bias: CUDATensor?
    /// SmoothQuant factors the input is multiplied by before quantization (FP32 [in]).
    let smoothing: CUDATensor?
    /// Calibrated amax of the (smoothed) input, and the activation scale amax / max it gives.
    let inputAmax: Float
    package let inputScale: Float
    /// FP32 on the device: weight scales ([1] or [out]).
    let weightScales: CUDATensor
    /// FP32 on the device. FP8: weight scale at offset 0, input scale at 16 bytes (cuBLASLt's A and B scale
    /// pointers). INT8: α[j] =
    /// input scale · weight scale[j], applied to the INT32 sums.
    let scales: CUDATensor
    /// Level-4 FP8 attention: the FP8 scale of each output column (amax / 448 of the Q, K or V it belongs to), which
    /// the GEMM's output is rounded with (FP32 [out]).
    let outputScales: CUDATensor?
    /// Level 4: the stacked Q/K/V of a self-attention that cuDNN's FP8 attention may run (set by `CUDABackend.prepare`).
    /// Its output then needs no rounding to the FP8 grids: the attention's quantize pass makes the same codes from it
    /// (but for values within an FP32 ulp of a rounding boundary: it multiplies by 448 / amax, the rounding divides by
    /// amax / 448).
    var feedsCuDNNFP8Attention = false
    /// Whether the last call rounded the output to the FP8 grids (for reports).
    var lastCallRounded = false
    /// How the last call made its reader's codes (`CUDAKernels.eightBitLinear(readerCodes:)`; nil: it wrote 16-bit
    /// values), for reports.
    var lastReaderCodes: ReaderCodesForm?
    enum ReaderCodesForm { case epilogue, pass }
    /// Per call shape of this layer (rows, residual, wgmma-aligned, output rounded, output as its reader's codes), the
    /// GEMM its problem's choice names (`CUDATuningTable`, shared by the layers of one shape; kept here so a repeated
    /// call skips the lookup).
    var gemmPaths: [GEMMCall: GEMMPath] = [:]
    struct GEMMCall: Hashable { var rows: Int, residual: Bool, wgmma: Bool, rounded: Bool, readerCodes: QuantizedFormat? = nil }
    /// The 8-bit GEMM to run: nil lets all compete (the default); a path forces it (for checks and measurements).
    package var forcedGEMM: GEMMPath?
    /// One 8-bit GEMM implementation.
    package enum GEMMPath: Hashable, Sendable, CustomStringConvertible {
        /// Our wgmma GEMM (`CUDAKernels.warpSpecializedGEMM`), dequantization, bias and residual in its epilogue.
        case warpSpecialized(CUDAKernels.WarpSpecializedGEMM)
        /// INT8 only: cuDNN's INT8 matmul graph with the dequantization, bias and residual fused.
        case cuDNN
        /// INT8: cuBLASLt's INT32 sums, then our dequantize kernel. FP8: cuBLASLt with both scales, the bias and the
        /// residual in its epilogue.
        case cuBLASLt

        /// The paths for `format` over `depth` inputs (the wgmma variants where the card runs them).
        package static func candidates(_ format: QuantizedFormat, depth: Int, wgmma: Bool) -> [GEMMPath] {
            (wgmma ? CUDAKernels.WarpSpecializedGEMM.variants(format, depth: depth).map { .warpSpecialized($0) } : [])
                + (format == .int8 ? [.cuDNN, .cuBLASLt] : [.cuBLASLt])
        }

        /// The path for INT8 layers (the report's wording).
        package var description: String { description(for: .int8) }

        /// The path as the per-layer report names it for a layer of `format`.
        package func description(for format: QuantizedFormat) -> String {
            switch self {
            case .warpSpecialized(let variant): return "\(variant) \(format.reportName), dequantize fused"
            case .cuDNN: return "cuDNN \(format.reportName), dequantize fused"
            case .cuBLASLt: return format == .int8 ? "cuBLASLt INT8 → INT32 + dequantize" : "cuBLASLt FP8 E4M3"
            }
        }

        /// The path as a `CUDATuningRecord` choice.
        var tuningCode: String {
            switch self {
            case .warpSpecialized(let v): return v.tuningCode
            case .cuDNN: return "cudnn"
            case .cuBLASLt: return "cublaslt"
            }
        }

        /// Whether the path rounds level-4 outputs to their FP8 grids itself (in its epilogue).
        var roundsOutput: Bool {
            if case .warpSpecialized = self { return true }
            return false
        }

        /// The path a choice names, among the GEMM variants this build has (nil for anything else).
        init?(tuningCode: String) {
            switch tuningCode {
            case "cudnn": self = .cuDNN
            case "cublaslt": self = .cuBLASLt
            default:
                guard let variant = CUDAKernels.WarpSpecializedGEMM.named(tuningCode: tuningCode) else { return nil }
                self = .warpSpecialized(variant)
            }
        }
    }
    /// A GEGLU projection (`CUDAKernels.eightBitGEGLU`): per call shape, the path its problem's choice names.
    var gegluPaths: [GEMMCall: GEGLUPath] = [:]
    /// The GEGLU path to run: nil lets both compete (the default); a path forces it (for checks and measurements).
    package var forcedGEGLU: GEGLUPath?
    /// How a GEGLU projection runs.
    package enum GEGLUPath: Hashable, Sendable, CustomStringConvertible {
        /// The layer's tuned GEMM, then the GEGLU kernel (which writes the next layer's codes).
        case separate
        /// Our wgmma GEMM with GEGLU in its epilogue, which writes the next layer's codes where that layer takes them
        /// in this layer's format (else 16 bit, and that layer's quantize pass).
        case fused(CUDAKernels.WarpSpecializedGEMM)

        /// Both ways for `format` over `depth` inputs, the fused one in each tile variant that can.
        package static func candidates(_ format: QuantizedFormat, depth: Int) -> [GEGLUPath] {
            [.separate] + CUDAKernels.WarpSpecializedGEMM.gegluVariants(format, depth: depth).map { .fused($0) }
        }

        package var description: String {
            switch self {
            case .separate: return "separate GEGLU"
            case .fused(let v): return "\(v), GEGLU fused"
            }
        }

        /// The fused path as the per-layer report names it for a layer of `format`.
        package func description(for format: QuantizedFormat) -> String {
            switch self {
            case .separate: return description
            case .fused(let v): return "\(v) \(format.reportName), GEGLU fused"
            }
        }

        /// The path as a `CUDATuningRecord` choice.
        var tuningCode: String {
            switch self {
            case .separate: return "separate"
            case .fused(let v): return "fused " + GEMMPath.warpSpecialized(v).tuningCode
            }
        }

        /// The path a choice names, among this build's (nil for anything else).
        init?(tuningCode: String) {
            let all = [GEGLUPath.separate] + CUDAKernels.WarpSpecializedGEMM.gegluVariants.map { .fused($0) }
            guard let path = all.first(where: { $0.tuningCode == tuningCode }) else { return nil }
            self = path
        }
    }
    /// The GEGLU path of the last call (for reports).
    package internal(set) var lastGEGLUPath: GEGLUPath?
    /// Whether the last call's fused GEGLU wrote the next layer's codes (for reports).
    var lastGEGLUWroteCodes = false
    /// The GEMM of the last call (for reports).
    package internal(set) var lastGEMMPath: GEMMPath?
    /// Made on first use of the wgmma GEMM: (α[j], α[j+1], bias[j], bias[j+1]) per column pair (FP32), and the
    /// TMA descriptors of the codes per tile variant.
    private var epilogue: CUDATensor?
    private var weightMaps: [CUDAKernels.WarpSpecializedGEMM: CUDATensorMap] = [:]
    private var halvesWeightMaps: [CUDAKernels.WarpSpecializedGEMM: CUDATensorMap] = [:]
    /// Host copies for `epilogue`: α per output column, and the bias.
    private let alphaValues: [Float]
    private let biasValues: [Float]?
    /// How a producer writes this layer's input codes in its epilogue (the wgmma GEGLU), made on first use; and the
    /// host copy of the SmoothQuant factors it is made from.
    private var inputCodes: CUDAKernels.ReaderCodes?
    private let smoothingValues: [Float]?
    /// Set when this layer's shape had no 8-bit GEMM: its weight dequantized to 16 bit, used from then on.
    var fallbackWeight: CUDATensor?
    package var fallbackReason: String?

    /// Why `layer` cannot run as a real 8-bit GEMM on this device (nil when it can).
    static func unsupportedReason(_ layer: QuantizedLayer, context: CUDAContext) -> String? {
        guard layer.kind == .linear, layer.weight.shape.count == 2 else { return "convolutions run in 16 bit" }
        guard layer.inputAmax != nil else { return "dynamic activation scales are simulated" }
        let (outFeatures, inFeatures) = (layer.weight.shape[0], layer.weight.shape[1])
        guard inFeatures % 16 == 0, outFeatures % 16 == 0 else { return "\(outFeatures)×\(inFeatures) is not a multiple of 16" }
        if layer.format == .fp8 {
            let (major, minor) = context.computeCapability
            guard major * 10 + minor >= 89 else {
                return "no FP8 tensor cores (compute capability \(major).\(minor), FP8 needs 8.9)"
            }
            guard layer.weight.scales.count == 1 else { return "per-channel FP8 weight scales are simulated" }
        }
        return nil
    }

    package convenience init(_ kernels: CUDAKernels, _ linear: Linear, _ layer: QuantizedLayer) throws {
        try self.init(kernels, name: layer.name, layers: [layer], bias: linear.bias)
    }

    /// Quantized layers that read one input (`FusionPlan.canStack`: one input scale, one SmoothQuant vector, one
    /// per-tensor weight scale) as one GEMM: their codes stacked along the output dimension.
    package convenience init(_ kernels: CUDAKernels, stacking stack: LinearStack) throws {
        let layers = stack.layers.compactMap(\.quantization)
        guard layers.count == stack.layers.count, FusionPlan.canStack(stack.layers) else {
            throw CUDAError.invalidArgument("\(stack.layers.map(\.name)): not quantized alike, cannot run as one 8-bit GEMM")
        }
        let name = layers[0].name + (layers.count > 1 ? " (+\(layers.count - 1) stacked)" : "")
        try self.init(kernels, name: name, layers: layers, bias: stack.makeBias())
    }

    private init(_ kernels: CUDAKernels, name: String, layers: [QuantizedLayer], bias: Tensor?) throws {
        let layer = layers[0]
        guard let amax = layer.inputAmax, layers.allSatisfy({ $0.weight.shape.count == 2 && $0.weight.shape[1] == layer.weight.shape[1] }) else {
            throw CUDAError.invalidArgument("\(name): not a static 8-bit Linear layer")
        }
        let context = kernels.context
        self.name = name
        layerCount = layers.count
        format = layer.format
        outFeatures = layers.map { $0.weight.shape[0] }.reduce(0, +)
        inFeatures = layer.weight.shape[1]
        codes = try context.uploadCodes(layers.flatMap(\.weight.codes), shape: [outFeatures, inFeatures],
                                        dtype: format == .int8 ? .int8 : .float8e4m3)
        self.bias = try bias.map { try kernels.upload($0) }
        biasValues = bias?.scalars
        smoothing = try layer.smoothing.map { try context.upload(Tensor(shape: [$0.count], scalars: $0), dtype: .float32) }
        smoothingValues = layer.smoothing
        inputAmax = amax
        let inputScale = layer.format.scale(forAmax: amax)
        self.inputScale = inputScale
        outputScales = try CUDALinearWeights.outputScales(layers, context: context)
        // one scale for the tensor when every layer has the same single one, else one per output row
        let weightScales = layers.allSatisfy({ $0.weight.scales.count == 1 && $0.weight.scales == layer.weight.scales })
            ? layer.weight.scales
            : layers.flatMap { l in l.weight.scales.count == 1 ? Array(repeating: l.weight.scales[0], count: l.weight.shape[0]) : l.weight.scales }
        guard format == .int8 || weightScales.count == 1 else {
            throw CUDAError.invalidArgument("\(name): FP8 weights with several scales (per channel, or unequal stacked ones) run simulated")
        }
        self.weightScales = try context.upload(Tensor(shape: [weightScales.count], scalars: weightScales), dtype: .float32)
        // FP8: cuBLASLt wants each scale pointer 16-byte aligned, so the input scale sits 16 bytes after the weight's.
        let gemmScales = layer.format == .fp8 ? [weightScales[0], 0, 0, 0, inputScale]
            : (0..<outFeatures).map { inputScale * weightScales[weightScales.count == 1 ? 0 : $0] }
        scales = try context.upload(Tensor(shape: [gemmScales.count], scalars: gemmScales), dtype: .float32)
        alphaValues = format == .int8 ? gemmScales : (0..<outFeatures).map { _ in weightScales[0] * inputScale }
    }

    /// The FP32 [out / 2, 4] operands of the wgmma GEMM's epilogue (made on first use).
    func epilogueOperands(_ kernels: CUDAKernels) throws -> CUDATensor {
        if let epilogue { return epilogue }
        let made = try kernels.warpSpecializedEpilogue(alpha: alphaValues, bias: biasValues)
        epilogue = made
        return made
    }

    /// This layer's input codes as a producer writes them: its format, SmoothQuant factors and input scale (the
    /// operands made on first use).
    func readerCodes(_ kernels: CUDAKernels) throws -> CUDAKernels.ReaderCodes {
        if let inputCodes { return inputCodes }
        let made = try CUDAKernels.ReaderCodes(kernels, format: format, factors: smoothingValues, columns: inFeatures, scale: inputScale,
                                               factorsOnDevice: smoothing)
        inputCodes = made
        return made
    }

    /// The TMA descriptor of the codes for `variant`'s tile (made on first use); with `halves`, for the GEGLU-fused
    /// GEMM (`CUDAKernels.warpSpecializedGEGLU`).
    func weightMap(for variant: CUDAKernels.WarpSpecializedGEMM, kernels: CUDAKernels, halves: Bool = false) throws -> CUDATensorMap {
        if let map = halves ? halvesWeightMaps[variant] : weightMaps[variant] { return map }
        let map = try kernels.warpSpecializedWeightMap(codes, variant, halves: halves)
        if halves { halvesWeightMaps[variant] = map } else { weightMaps[variant] = map }
        return map
    }

    /// The dtype of this layer's input codes.
    var codeType: CUDADataType { format == .int8 ? .int8 : .float8e4m3 }

    /// Whether a producer may hand this layer its input already quantized (codes of `width` columns): its 8-bit
    /// GEMM runs (no 16-bit fallback) on inputs of that width.
    func acceptsCodes(width: Int) -> Bool { fallbackWeight == nil && width == inFeatures }

    /// Device bytes of the weight (codes, scales, bias, smoothing).
    var byteCount: Int {
        codes.byteCount + weightScales.byteCount + scales.byteCount + (bias?.byteCount ?? 0) + (smoothing?.byteCount ?? 0)
            + (outputScales?.byteCount ?? 0) + (fallbackWeight?.byteCount ?? 0) + (epilogue?.byteCount ?? 0) + (inputCodes?.operands.byteCount ?? 0)
    }
}

/// One layer's line of `CUDABackend.layerReport`.
public struct CUDALayerTiming: Sendable {
    /// The layer's state-dict name.
    public let layer: String
    /// The operation class ("GEMM (linear)", "conv 3x3", …).
    public let kind: String
    /// The kernel that ran (library, data types, path).
    public let kernel: String
    /// Whether its arithmetic ran in 8 bit.
    public let eightBit: Bool
    public let milliseconds: Double
    /// Whether the stream's hold ended before the operation was queued (something in it blocked the host), so that
    /// `milliseconds` includes the host's time to queue it: an upper bound of its device time.
    public let includesHostTime: Bool
}

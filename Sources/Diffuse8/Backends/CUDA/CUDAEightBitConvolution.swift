/// A quantized Conv2d held on the device in 8 bit and run as a real 8-bit convolution
/// (`CUDAKernels.eightBitConvolution`): its stored codes, reordered channels-last [o, kh, kw, c] as cuDNN's 8-bit
/// convolutions want them, the calibrated input scale, and α[o] = input scale · weight scale[o], which turns the
/// integer (INT8) or FP32 (FP8) sums into the simulated layer's output. Half the bytes of the 16-bit weight.
///
/// Per input shape, the 8-bit paths (cuDNN's plan and, on Hopper, our implicit-GEMM kernel in each tile variant) are
/// timed against the layer's 16-bit path (the input fake-quantized, then the 16-bit convolution on the dequantized
/// weight) on first use, and the fastest is kept; shapes with no 8-bit path run in 16 bit. The 16-bit weight exists
/// only while some shape uses it or is being timed.
package final class CUDAEightBitConvolution {
    enum Path: Equatable {
        /// cuDNN's 8-bit graph.
        case eightBit(CUDNNEightBitGraphs.Form)
        /// Our implicit-GEMM kernel (`CUDAKernels.warpSpecializedConvolution`).
        case warpSpecialized(CUDAKernels.WarpSpecializedGEMM)
        /// 16 bit, and why (no 8-bit plan, or the 8-bit path measured slower).
        case sixteenBit(String)

        /// The path as a `CUDATuningRecord` choice ("8bit" for cuDNN, the wgmma variant, or "16bit" and the reason).
        /// The form of cuDNN's path is left out: it is the form of the plan cuDNN's 8-bit graphs choose for the shape.
        var tuningCode: String {
            switch self {
            case .eightBit: return "8bit"
            case .warpSpecialized(let variant): return variant.tuningCode
            case .sixteenBit(let why): return why.isEmpty ? "16bit" : "16bit " + CUDATuningRecord.sanitized(why)
            }
        }

        init?(tuningCode: String) {
            if tuningCode == "8bit" { self = .eightBit(.fusedEpilogue) }
            else if let variant = CUDAKernels.WarpSpecializedGEMM.named(tuningCode: tuningCode) { self = .warpSpecialized(variant) }
            else if tuningCode == "16bit" { self = .sixteenBit("") }
            else if tuningCode.hasPrefix("16bit ") { self = .sixteenBit(String(tuningCode.dropFirst(6))) }
            else { return nil }
        }
    }

    let name: String
    let format: QuantizedFormat
    let inChannels: Int, outChannels: Int, kernelHeight: Int, kernelWidth: Int
    let stride: Int, padding: Int
    /// Products summed per output: kh · kw · c.
    var depth: Int { kernelHeight * kernelWidth * inChannels }
    /// [o, kh, kw, c] codes.
    let codes: CUDATensor
    /// α[o] = input scale · weight scale[o], FP32.
    let alpha: CUDATensor
    let bias: CUDATensor?
    let inputAmax: Float
    package let inputScale: Float
    /// The stored layer and bias the 16-bit path's weights are made from when a shape needs them (the model's host
    /// weight is released once the backend holds its copy; the codes stay).
    private let quantized: QuantizedLayer
    private let hostBias: Tensor?
    /// The 16-bit weights, while a shape runs (or is timed) in 16 bit.
    var sixteenBit: CUDAConvolutionWeights?
    /// The path chosen per input shape [n, c, h, w].
    var paths: [Call: Path] = [:]
    /// What a path is chosen for: the input shape [n, c, h, w], and whether our kernel may compete.
    struct Call: Hashable { var shape: [Int], allowsWGMMA: Bool }
    /// The path of the last call (for reports).
    var lastPath: Path?
    /// Whether a shape with an 8-bit plan may still run in 16 bit when that measures faster (the default); false
    /// always takes cuDNN's 8-bit plan (for checks of the 8-bit path itself).
    package var choosesFastestPath = true
    /// Runs our implicit-GEMM kernel in this variant on every shape (for checks and measurements); nil lets the paths
    /// compete (the default).
    package var forcedWGMMA: CUDAKernels.WarpSpecializedGEMM?
    /// Host copy of α[o], for our kernel's epilogue operands.
    private let alphaValues: [Float]
    /// Made on first use of our kernel: its epilogue operands and the weight's TMA descriptor per tile variant.
    private var epilogue: CUDATensor?
    private var weightMaps: [CUDAKernels.WarpSpecializedGEMM: CUDATensorMap] = [:]

    /// Why `layer` cannot run as a real 8-bit convolution on this device (nil when it can).
    static func unsupportedReason(_ layer: QuantizedLayer, context: CUDAContext) -> String? {
        guard layer.kind == .conv2d, layer.weight.shape.count == 4 else { return "not a convolution" }
        guard layer.inputAmax != nil else { return "dynamic activation scales are simulated" }
        let (o, c) = (layer.weight.shape[0], layer.weight.shape[1])
        guard o % 16 == 0, c % 16 == 0 else { return "\(o)×\(c) channels: not multiples of 16" }
        if layer.format == .fp8 {
            let (major, minor) = context.computeCapability
            guard major * 10 + minor >= 89 else { return "no FP8 tensor cores (compute capability \(major).\(minor), FP8 needs 8.9)" }
        }
        return nil
    }

    package init(_ kernels: CUDAKernels, _ conv: Conv2d, _ quantized: QuantizedLayer, withBias: Bool) throws {
        guard let amax = quantized.inputAmax, quantized.weight.shape.count == 4 else {
            throw CUDAError.invalidArgument("\(quantized.name): not a static 8-bit convolution")
        }
        let shape = quantized.weight.shape
        let (o, c, kh, kw) = (shape[0], shape[1], shape[2], shape[3])
        name = quantized.name
        format = quantized.format
        (inChannels, outChannels, kernelHeight, kernelWidth) = (c, o, kh, kw)
        stride = conv.stride
        padding = conv.padding
        self.quantized = quantized
        hostBias = withBias ? conv.bias : nil
        let context = kernels.context
        codes = try context.uploadCodes(quantized.weight.channelsLast().codes, shape: [o, kh, kw, c], dtype: quantized.format == .int8 ? .int8 : .float8e4m3)
        let inputScale = quantized.format.scale(forAmax: amax)
        inputAmax = amax
        self.inputScale = inputScale
        let scales = quantized.weight.scales
        let alphas = (0..<o).map { inputScale * scales[scales.count == 1 ? 0 : $0] }
        alphaValues = alphas
        alpha = try context.upload(Tensor(shape: [o], scalars: alphas), dtype: .float32)
        bias = withBias ? try conv.bias.map { try kernels.upload($0) } : nil
    }

    /// The 16-bit weights (the dequantized codes, as the simulation computes with), uploaded on first need.
    func sixteenBitWeights(_ kernels: CUDAKernels) throws -> CUDAConvolutionWeights {
        if let sixteenBit { return sixteenBit }
        let dequantized = Conv2d(name: name, weight: quantized.weight.dequantized(), bias: hostBias, stride: stride, padding: padding)
        let made = try CUDAConvolutionWeights(kernels, dequantized)
        sixteenBit = made
        return made
    }

    /// Frees the 16-bit weights when no shape runs in 16 bit.
    func releaseSixteenBitIfUnused() {
        if !paths.values.contains(where: { if case .sixteenBit = $0 { true } else { false } }) { sixteenBit = nil }
    }

    /// Whether our implicit-GEMM kernel can run this layer on this device: stride 1, a square odd kernel with
    /// "same" padding, and a card that runs the wgmma GEMM.
    func runsWarpSpecialized(_ kernels: CUDAKernels) -> Bool {
        stride == 1 && kernelHeight == kernelWidth && kernelHeight % 2 == 1 && padding == kernelHeight / 2
            && kernels.runsWarpSpecializedGEMM
    }

    /// Our kernel's epilogue operands (α[o] and the bias per channel pair), made on first use.
    func epilogueOperands(_ kernels: CUDAKernels) throws -> CUDATensor {
        if let epilogue { return epilogue }
        let made = try kernels.warpSpecializedEpilogue(alpha: alphaValues, bias: hostBias?.scalars)
        epilogue = made
        return made
    }

    /// The TMA descriptor of the codes for `variant`'s tile (made on first use).
    func weightMap(for variant: CUDAKernels.WarpSpecializedGEMM, kernels: CUDAKernels) throws -> CUDATensorMap {
        if let map = weightMaps[variant] { return map }
        let map = try kernels.warpSpecializedConvolutionWeightMap(codes, variant)
        weightMaps[variant] = map
        return map
    }

    /// The dtype of this layer's input codes.
    package var codeType: CUDADataType { format == .int8 ? .int8 : .float8e4m3 }

    /// Whether an input of `shape` [n, c, h, w] runs an 8-bit path already chosen (forced, or timed on an earlier
    /// call), so that a producer may hand this layer its channels-last input codes instead.
    package func takesCodes(forInput shape: [Int], allowsWGMMA: Bool) -> Bool {
        switch forcedWGMMA.map(Path.warpSpecialized) ?? paths[Call(shape: shape, allowsWGMMA: allowsWGMMA)] {
        case .eightBit, .warpSpecialized: true
        case .sixteenBit, nil: false
        }
    }

    package var runsEightBit: Bool {
        switch lastPath {
        case .eightBit, .warpSpecialized: true
        case .sixteenBit, nil: false
        }
    }

    /// The report's name of the last call's kernel.
    var lastKernelDescription: String {
        switch lastPath {
        case .eightBit(let form): "cuDNN \(format.reportName) NHWC, \(form.rawValue)"
        case .warpSpecialized(let variant): "\(variant) \(format.reportName) implicit GEMM, NHWC"
        case .sixteenBit(let why): "16-bit, 8-bit input simulated (\(why))"
        case nil: "convolution"
        }
    }

    /// Why the last call ran in 16 bit, if it did.
    package var sixteenBitReason: String? { if case .sixteenBit(let why) = lastPath { why } else { nil } }
}

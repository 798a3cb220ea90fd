/// A quantized Conv2d held on the device in 8 bit and run as a real 8-bit convolution
/// (`CUDAKernels.eightBitConvolution`): its stored codes, reordered channels-last [o, kh, kw, c] as cuDNN's 8-bit
/// convolutions want them, the calibrated input scale, and α[o] = input scale · weight scale[o], which turns the
/// integer (INT8) or FP32 (FP8) sums into the simulated layer's output. Half the bytes of the 16-bit weight.
///
/// Per input shape, the 8-bit path is timed against the layer's 16-bit path (the input fake-quantized, then the
/// 16-bit convolution on the dequantized weight) on first use, and the faster one is kept; shapes with no cuDNN
/// plan run in 16 bit. The 16-bit weight exists only while some shape uses it or is being timed.
package final class CUDAEightBitConvolution {
    enum Path: Equatable {
        case eightBit(CUDNNEightBitGraphs.Form)
        /// 16 bit, and why (no 8-bit plan, or the 8-bit path measured slower).
        case sixteenBit(String)

        /// The path as a `CUDATuningRecord` choice ("8bit", or "16bit" and the reason). The form of an 8-bit path
        /// is left out: it is the form of the plan cuDNN's 8-bit graphs choose for the shape.
        var tuningCode: String {
            switch self {
            case .eightBit: return "8bit"
            case .sixteenBit(let why): return why.isEmpty ? "16bit" : "16bit " + CUDATuningRecord.sanitized(why)
            }
        }

        init?(tuningCode: String) {
            if tuningCode == "8bit" { self = .eightBit(.fusedEpilogue) }
            else if tuningCode == "16bit" { self = .sixteenBit("") }
            else if tuningCode.hasPrefix("16bit ") { self = .sixteenBit(String(tuningCode.dropFirst(6))) }
            else { return nil }
        }
    }

    let name: String
    let format: QuantizedFormat
    let inChannels: Int, outChannels: Int, kernelHeight: Int, kernelWidth: Int
    let stride: Int, padding: Int
    /// [o, kh, kw, c] codes.
    let codes: CUDATensor
    /// α[o] = input scale · weight scale[o], FP32.
    let alpha: CUDATensor
    let bias: CUDATensor?
    let inputAmax: Float
    let inputScale: Float
    /// The stored layer and bias the 16-bit path's weights are made from when a shape needs them (the model's host
    /// weight is released once the backend holds its copy; the codes stay).
    private let quantized: QuantizedLayer
    private let hostBias: Tensor?
    /// The 16-bit weights, while a shape runs (or is timed) in 16 bit.
    var sixteenBit: CUDAConvolutionWeights?
    /// The path chosen per input shape [n, c, h, w].
    var paths: [[Int]: Path] = [:]
    /// The path of the last call (for reports).
    var lastPath: Path?
    /// Whether a shape with an 8-bit plan may still run in 16 bit when that measures faster (the default); false
    /// always takes the 8-bit plan (for checks of the 8-bit path itself).
    package var choosesFastestPath = true

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

    package var runsEightBit: Bool { if case .eightBit = lastPath { true } else { false } }

    /// Why the last call ran in 16 bit, if it did.
    package var sixteenBitReason: String? { if case .sixteenBit(let why) = lastPath { why } else { nil } }
}

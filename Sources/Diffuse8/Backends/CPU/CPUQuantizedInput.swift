/// How a real INT8 layer turns its FP32 input into codes: the static per-tensor scale (nil: per token for a Linear,
/// per sample for a convolution, from the amax at run time) and the SmoothQuant factors the input is multiplied by
/// first. Two layers with equal input quantizations compute the same codes from the same input.
struct CPUInt8InputQuantization: Equatable, Sendable {
    let scale: Float?
    let smoothing: [Float]?

    init(_ layer: QuantizedLayer) {
        scale = layer.inputAmax.map { QuantizedFormat.int8.scale(forAmax: $0) }
        smoothing = layer.smoothing
    }

    /// The smoothing factors as a pointer (nil: none) for the duration of `body`.
    func withSmoothing<R>(_ body: (UnsafePointer<Float>?) -> R) -> R {
        guard let smoothing else { return body(nil) }
        return smoothing.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    static func == (a: Self, b: Self) -> Bool {
        a.scale?.bitPattern == b.scale?.bitPattern && a.smoothing == b.smoothing
    }
}

/// INT8 input codes written by the producer of a tensor (LayerNorm, GEGLU, GroupNorm+SiLU) for the real INT8 layers
/// that read it, attached to the FP32 result (`Tensor.quantizedInput`): the reader (`CPUInt8LayerHook`) takes these
/// codes instead of quantizing the tensor in a pass of its own. They are the codes that pass would compute (the same
/// function, `CPUInt8LayerHook.quantizeRow` / `encode`, on the same FP32 values), so the result is bit for bit the same.
///
/// Immutable once made, so it may be read from any thread; it lives as long as the tensor that carries it.
final class CPUQuantizedInput: Sendable {
    enum Layout: Equatable, Sendable {
        /// A Linear's A operand: `rows` rows of `width` codes, each padded to `lda` (and the rows to whole micro-kernel
        /// tiles) with code 0; one scale per row.
        case rows(width: Int, lda: Int, rows: Int)
        /// A convolution's input [N, C, H, W] as channels-last codes [N, H, W, C]; one scale per image.
        case channelsLast(shape: [Int])
    }

    let quantization: CPUInt8InputQuantization
    let layout: Layout
    /// Codes + 128 (the micro-kernels' unsigned operand).
    let codes: [UInt8]
    /// The activation scale per row (`rows`) or per image (`channelsLast`).
    let scales: [Float]

    init(quantization: CPUInt8InputQuantization, layout: Layout, codes: [UInt8], scales: [Float]) {
        self.quantization = quantization
        self.layout = layout
        self.codes = codes
        self.scales = scales
    }

    /// Whether these codes are what a layer with `quantization` would compute from a tensor of this layout.
    func serves(_ quantization: CPUInt8InputQuantization, as layout: Layout) -> Bool {
        self.layout == layout && self.quantization == quantization
    }
}

/// A level-4 self-attention module that runs through cuDNN's FP8 attention (`CUDAKernels.cudnnFP8Attention`): the
/// factors that turn its stacked Q/K/V output (16-bit values on the FP8 grids of their output ranges) into E4M3
/// codes, and the graph's scales on the device. Its output comes back as the input codes of `to_out.0`, a real FP8
/// GEMM without SmoothQuant factors (FP8 folders have none), so the simulation's input quantizer of that layer is
/// the graph's last scale. The probabilities' FP8 scale is 1/448 (a_P = 1: P ≤ 1).
final class CUDAFP8Attention {
    /// The module's name ("….attn1"), for reports.
    let name: String
    /// The E4M3 codes the attention reads: the stacked [q | k | v] output times 448 / amax of Q, K or V per column
    /// (scale 1). Written by the stack's GEMM where it can, else by a quantize pass.
    let stackCodes: CUDAKernels.ReaderCodes
    /// The graph's scalars on the device (`FP8AttentionScales`).
    let scales: CUDATensor
    /// Why this module runs our own kernel instead: cuDNN had no FP8 plan for its shape on the first call.
    var fallbackReason: String?
    /// Whether cuDNN ran it once (later errors are errors, not a missing plan).
    var hasRun = false

    /// nil when a projection has no FP8 output range (the folder is not level 4) or a range is not positive.
    init?(_ kernels: CUDAKernels, _ module: MultiHeadAttention, reader: CUDAEightBitLinear) throws {
        let largest = QuantizedFormat.fp8.maxValue
        guard let q = module.query.quantization?.outputAmax, let k = module.key.quantization?.outputAmax,
              let v = module.value.quantization?.outputAmax, [q, k, v].allSatisfy({ $0 > 0 && $0.isFinite }),
              reader.inputScale > 0, reader.inputScale.isFinite else { return nil }
        let channels = module.query.outFeatures
        name = module.name
        stackCodes = try CUDAKernels.ReaderCodes(kernels, format: .fp8, factors: [q, k, v].flatMap { [Float](repeating: largest / $0, count: channels) },
                                                 columns: 3 * channels, scale: 1)
        scales = try FP8AttentionScales(descaleQ: q / largest, descaleK: k / largest, descaleV: v / largest, descaleP: 1 / largest,
                                        scaleP: largest, scaleO: 1 / reader.inputScale).upload(to: kernels.context)
    }
}

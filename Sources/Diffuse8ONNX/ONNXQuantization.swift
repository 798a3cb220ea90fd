import Diffuse8

/// Q/DQ placement as NVIDIA's Model Optimizer exports it for TensorRT, for the layers a quantized model folder
/// holds (`QuantizedLayer`, the same definition the simulation runs):
/// - weight: the initializer (the dequantized codes, i.e. W/s) → QuantizeLinear → DequantizeLinear, per output
///   channel (axis 0) or per tensor, zero point 0 of the code type (INT8, or FLOAT8E4M3FN with opset ≥ 19);
/// - input: SmoothQuant's factors as a `Mul` (`pre_quant_scale`), then per-tensor Q/DQ with scale amax / 127 (448);
/// - level-4 FP8 attention: Q/DQ (scale = output amax / 448) on Q, Kᵀ and V where they enter the attention
///   products, and on the softmax output with amax 1.
/// Scales have the graph's float type (the type of the tensor they quantize).
final class ONNXQuantization {
    let graph: ONNXGraphBuilder
    /// Linear outputs that the simulation rounds to FP8 (Q, K, V of FP8 attention), with their amax.
    private var fp8Outputs: [String: (amax: Float, layer: String)] = [:]
    /// Counts of the Q/DQ pairs written, by kind ("conv2d weight", "linear input", "attention Q/K/V", …).
    private(set) var pairs: [String: Int] = [:]

    init(graph: ONNXGraphBuilder) {
        self.graph = graph
    }

    private func codeType(_ format: QuantizedFormat) -> ONNXElementType { format == .int8 ? .int8 : .float8E4M3FN }

    /// QuantizeLinear → DequantizeLinear of `x` named under `scope` (`<layer>.input_quantizer`, …).
    private func pair(_ x: String, scales: [Float], dims: [Int], format: QuantizedFormat, axis: Int?, scope: String, kind: String) -> String {
        let scale = graph.initializer(scope + ".scale", dims: dims, data: .floats(scales, graph.floatType))
        let zero = graph.initializer(scope + ".zero_point", dims: dims, data: .zeros(scales.count, codeType(format)))
        let attributes = axis.map { [ONNXAttribute.int("axis", $0)] } ?? []
        let q = graph.op("QuantizeLinear", [x, scale, zero], scope: scope, attributes: attributes)
        pairs[kind, default: 0] += 1
        return graph.op("DequantizeLinear", [q, scale, zero], scope: scope, attributes: attributes)
    }

    /// The layer's input as its kernel sees it: smoothed and fake-quantized (unchanged for a dense layer).
    func quantizedInput(_ x: String, layer: QuantizedLayer?, kind: QuantizedLayer.Kind, scope: String) throws -> String {
        guard let layer else { return x }
        guard let amax = layer.inputAmax else {
            throw ONNXExportError("\(layer.name): dynamic (per-token) activation scales cannot be written as static Q/DQ nodes; quantize with calibration statistics to export")
        }
        var input = x
        if let smoothing = layer.smoothing {
            let factors = graph.initializer(layer.name + ".input_quantizer._pre_quant_scale", dims: [smoothing.count],
                                            data: .floats(smoothing, graph.floatType))
            input = graph.op("Mul", [input, factors], scope: layer.name + ".input_quantizer", label: "PreQuantScale")
        }
        return pair(input, scales: [layer.format.scale(forAmax: amax)], dims: [], format: layer.format, axis: nil,
                    scope: layer.name + ".input_quantizer", kind: "\(kind.rawValue) input")
    }

    /// The weight initializer `<name>.weight`, followed by its Q/DQ pair when the layer is quantized.
    func weight(_ weight: Tensor, name: String, layer: QuantizedLayer?) throws -> String {
        let w = graph.initializer(name + ".weight", dims: weight.shape, data: .floats(weight.scalars, graph.floatType))
        guard let layer else { return w }
        let scales = layer.weight.scales
        let perChannel = scales.count > 1
        return pair(w, scales: scales, dims: perChannel ? [scales.count] : [], format: layer.format, axis: perChannel ? 0 : nil,
                    scope: name + ".weight_quantizer", kind: "\(layer.kind.rawValue) weight")
    }

    /// Remembers that the simulation rounds this Linear output to FP8 (level-4 attention's Q, K, V).
    func markFP8Output(_ output: String, amax: Float, layer: String) {
        fp8Outputs[output] = (amax, layer)
    }

    /// `tensor` (a head-split view of the Linear output `source`) with the FP8 Q/DQ of that output when it has one.
    func fp8Output(of source: String, _ tensor: String, scope: String, label: String) -> String {
        guard let amax = fp8Outputs[source]?.amax else { return tensor }
        return pair(tensor, scales: [QuantizedFormat.fp8.scale(forAmax: amax)], dims: [], format: .fp8, axis: nil,
                    scope: scope + "." + label, kind: "attention Q/K/V")
    }

    /// Softmax probabilities rounded to FP8 with `amax` (1, as they lie in [0, 1], or the module's calibrated max).
    func fp8Probabilities(_ p: String, amax: Float, scope: String) -> String {
        pair(p, scales: [QuantizedFormat.fp8.scale(forAmax: amax)], dims: [], format: .fp8, axis: nil,
             scope: scope + ".softmax_quantizer", kind: "attention softmax")
    }
}

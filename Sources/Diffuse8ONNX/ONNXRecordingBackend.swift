import Diffuse8

/// A tensor of the graph being recorded: its ONNX name and its shape in the trace (the example sizes the export
/// runs the model with). The graph itself keeps batch, spatial and sequence sizes dynamic.
public struct ONNXValue {
    public let name: String
    public let shape: [Int]
}

/// A backend that runs nothing: each operation the model calls appends the equivalent ONNX nodes, so running the
/// one model definition (`UNet2DConditionModel.forward`) on it writes the model's graph, and the export cannot drift
/// from execution. Weights become initializers named as in the diffusers state dict; a quantized layer
/// (`Linear/Conv2d.quantization`) gets the Q/DQ nodes TensorRT expects (see `ONNXQuantization`).
///
/// Shapes stay dynamic: reshapes copy the leading dimensions (`0` in ONNX's Reshape), spatial sizes come from the
/// tensor that has them at run time (`Shape`), never from the trace. The trace's spatial sizes are chosen so that
/// every resolution level has its own (height, width) pair, which identifies the tensor to take a size from.
final class ONNXRecordingBackend: ModelBackend {
    typealias Value = ONNXValue

    let graph: ONNXGraphBuilder
    let quantization: ONNXQuantization
    /// The module path of the layer recorded last: element-wise nodes are named under it.
    private var scope = "unet"
    /// The first NCHW tensor seen at each trace (height, width): the source of that level's size at run time.
    private var spatialSources: [[Int]: String] = [:]
    private var spatialShapes: [String: String] = [:]

    init(graph: ONNXGraphBuilder, quantization: ONNXQuantization) {
        self.graph = graph
        self.quantization = quantization
    }

    func fusionPlan(for model: AnyObject) -> FusionPlan? { nil }

    func shape(of x: ONNXValue) -> [Int] { x.shape }

    func upload(_ x: Tensor) throws -> ONNXValue {
        let name = graph.floatConstant(x.scalars, dims: x.shape)
        return value(name, x.shape)
    }

    func download(_ x: ONNXValue) throws -> Tensor {
        throw ONNXExportError("the ONNX recorder computes no values (\(x.name) was asked for)")
    }

    /// A recorded value; NCHW values register their level's spatial size source.
    func value(_ name: String, _ shape: [Int]) -> ONNXValue {
        if shape.count == 4, spatialSources[[shape[2], shape[3]]] == nil { spatialSources[[shape[2], shape[3]]] = name }
        return ONNXValue(name: name, shape: shape)
    }

    func reshape(_ x: ONNXValue, _ shape: [Int]) throws -> ONNXValue {
        if shape == x.shape { return x }
        guard let first = shape.first, first == x.shape.first, !shape.dropFirst().contains(-1) else {
            throw ONNXExportError("cannot express reshape \(x.shape) → \(shape) with a dynamic batch")
        }
        let target = graph.int64Constant([0] + shape.dropFirst().map(Int64.init))
        return value(graph.op("Reshape", [x.name, target], scope: scope), shape)
    }

    // MARK: Layers

    func linear(_ x: ONNXValue, _ layer: Linear, residual: ONNXValue?) throws -> ONNXValue {
        scope = layer.name
        let input = try quantization.quantizedInput(x.name, layer: layer.quantization, kind: .linear, scope: layer.name)
        let weight = try quantization.weight(layer.weight, name: layer.name, layer: layer.quantization)
        let transposed = graph.op("Transpose", [weight], scope: layer.name, attributes: [ONNXAttribute.ints("perm", [1, 0])])
        var y = graph.op("MatMul", [input, transposed], scope: layer.name)
        if let bias = layer.bias {
            y = graph.op("Add", [y, graph.initializer(layer.name + ".bias", dims: bias.shape, data: .floats(bias.scalars, graph.floatType))],
                         scope: layer.name)
        }
        if let amax = layer.quantization?.outputAmax { quantization.markFP8Output(y, amax: amax, layer: layer.name) }
        var shape = x.shape
        shape[shape.count - 1] = layer.outFeatures
        if let residual { y = graph.op("Add", [y, residual.name], scope: layer.name, label: "AddResidual") }
        return value(y, shape)
    }

    func stackedLinear(_ x: ONNXValue, _ stack: LinearStack) throws -> ONNXValue {
        throw ONNXExportError("the ONNX recorder prepares no fused layers (stacked \(stack.layers.map(\.name)))")
    }

    func conv2d(_ x: ONNXValue, _ layer: Conv2d) throws -> ONNXValue {
        scope = layer.name
        let input = try quantization.quantizedInput(x.name, layer: layer.quantization, kind: .conv2d, scope: layer.name)
        let weight = try quantization.weight(layer.weight, name: layer.name, layer: layer.quantization)
        var inputs = [input, weight]
        if let bias = layer.bias {
            inputs.append(graph.initializer(layer.name + ".bias", dims: bias.shape, data: .floats(bias.scalars, graph.floatType)))
        }
        let k = layer.weightShape[2], p = layer.padding, s = layer.stride
        let y = graph.op("Conv", inputs, scope: layer.name, attributes: [
            ONNXAttribute.ints("kernel_shape", [k, layer.weightShape[3]]), ONNXAttribute.ints("pads", [p, p, p, p]),
            ONNXAttribute.ints("strides", [s, s]), ONNXAttribute.ints("dilations", [1, 1]), ONNXAttribute.int("group", 1),
        ])
        let h = (x.shape[2] + 2 * p - k) / s + 1, w = (x.shape[3] + 2 * p - layer.weightShape[3]) / s + 1
        return value(y, [x.shape[0], layer.outChannels, h, w])
    }

    /// GroupNorm as TensorRT's pattern for it: [N, G, C/G·H·W] → InstanceNormalization → back → ·γ + β
    /// (opset 18–20's GroupNormalization scales per group, not per channel).
    func groupNorm(_ x: ONNXValue, _ norm: GroupNorm, silu: Bool) throws -> ONNXValue {
        scope = norm.name
        let c = x.shape[1], g = norm.groups
        let grouped = graph.op("Reshape", [x.name, graph.int64Constant([0, Int64(g), -1])], scope: norm.name)
        let ones = graph.floatConstant([Float](repeating: 1, count: g), dims: [g])
        let zeros = graph.floatConstant([Float](repeating: 0, count: g), dims: [g])
        let normed = graph.op("InstanceNormalization", [grouped, ones, zeros], scope: norm.name,
                              attributes: [ONNXAttribute.float("epsilon", norm.epsilon)])
        let shape = graph.op("Shape", [x.name], scope: norm.name)
        let restored = graph.op("Reshape", [normed, shape], scope: norm.name)
        let gamma = graph.initializer(norm.name + ".weight", dims: [c, 1, 1], data: .floats(norm.weight.scalars, graph.floatType))
        let beta = graph.initializer(norm.name + ".bias", dims: [c, 1, 1], data: .floats(norm.bias.scalars, graph.floatType))
        let y = graph.op("Add", [graph.op("Mul", [restored, gamma], scope: norm.name), beta], scope: norm.name)
        return silu ? siluNode(y, x.shape) : value(y, x.shape)
    }

    func layerNorm(_ x: ONNXValue, _ norm: LayerNorm) throws -> ONNXValue {
        scope = norm.name
        let gamma = graph.initializer(norm.name + ".weight", dims: norm.weight.shape, data: .floats(norm.weight.scalars, graph.floatType))
        let beta = graph.initializer(norm.name + ".bias", dims: norm.bias.shape, data: .floats(norm.bias.scalars, graph.floatType))
        let y = graph.op("LayerNormalization", [x.name, gamma, beta], scope: norm.name,
                         attributes: [ONNXAttribute.int("axis", -1), ONNXAttribute.float("epsilon", norm.epsilon)])
        return value(y, x.shape)
    }

    /// softmax(Q·Kᵀ/√d)·V per head: [B, L, C] → [B, h, L, d] (K as [B, h, d, L]). With FP8 attention, Q/DQ on
    /// Q, Kᵀ, V and on the softmax output (amax 1), the pattern TensorRT fuses into its FP8 attention kernel.
    func attention(query: Columns<ONNXValue>, key: Columns<ONNXValue>, value v: Columns<ONNXValue>, heads: Int,
                   causal: Bool, fp8: Bool) throws -> ONNXValue {
        try attention(query: query, key: key, value: v, heads: heads, causal: causal, probabilityAmax: fp8 ? 1 : nil)
    }

    /// FP8 attention whose softmax output Q/DQ uses the module's calibrated probability amax.
    func fp8Attention(query: Columns<ONNXValue>, key: Columns<ONNXValue>, value: Columns<ONNXValue>, heads: Int,
                      probabilityAmax: Float, module: MultiHeadAttention) throws -> ONNXValue {
        try attention(query: query, key: key, value: value, heads: heads, causal: false, probabilityAmax: probabilityAmax)
    }

    /// `probabilityAmax`: nil = full-precision probabilities, else their FP8 Q/DQ amax.
    private func attention(query: Columns<ONNXValue>, key: Columns<ONNXValue>, value v: Columns<ONNXValue>, heads: Int,
                           causal: Bool, probabilityAmax: Float?) throws -> ONNXValue {
        guard !causal else { throw ONNXExportError("causal attention (text encoders) is not exported") }
        // The last layer recorded is this module's to_v (the recorder fuses nothing), so its parent is the module.
        let attentionScope = String(scope.split(separator: ".").dropLast(1).joined(separator: "."))  // …attn1
        let channels = query.width, d = channels / heads
        func split(_ c: Columns<ONNXValue>, keyLayout: Bool) -> String {
            var t = c.tensor.name
            if c.offset != 0 || c.width != c.tensor.shape.last! {
                t = graph.op("Slice", [t, graph.int64Constant([Int64(c.offset)]), graph.int64Constant([Int64(c.offset + c.width)]),
                                       graph.int64Constant([-1])], scope: attentionScope)
            }
            let heads4 = graph.op("Reshape", [t, graph.int64Constant([0, 0, Int64(heads), Int64(d)])], scope: attentionScope)
            return graph.op("Transpose", [heads4], scope: attentionScope,
                            attributes: [ONNXAttribute.ints("perm", keyLayout ? [0, 2, 3, 1] : [0, 2, 1, 3])])
        }
        let q = quantization.fp8Output(of: query.tensor.name, split(query, keyLayout: false), scope: attentionScope, label: "q_bmm_quantizer")
        let kT = quantization.fp8Output(of: key.tensor.name, split(key, keyLayout: true), scope: attentionScope, label: "k_bmm_quantizer")
        let vh = quantization.fp8Output(of: v.tensor.name, split(v, keyLayout: false), scope: attentionScope, label: "v_bmm_quantizer")
        let scores = graph.op("MatMul", [q, kT], scope: attentionScope)
        let scaled = graph.op("Mul", [scores, graph.floatConstant([1 / Float(d).squareRoot()], dims: [])], scope: attentionScope)
        var probabilities = graph.op("Softmax", [scaled], scope: attentionScope, attributes: [ONNXAttribute.int("axis", -1)])
        if let probabilityAmax { probabilities = quantization.fp8Probabilities(probabilities, amax: probabilityAmax, scope: attentionScope) }
        let context = graph.op("MatMul", [probabilities, vh], scope: attentionScope)
        let merged = graph.op("Transpose", [context], scope: attentionScope, attributes: [ONNXAttribute.ints("perm", [0, 2, 1, 3])])
        let y = graph.op("Reshape", [merged, graph.int64Constant([0, 0, Int64(channels)])], scope: attentionScope)
        return value(y, [query.tensor.shape[0], query.tensor.shape[1], channels])
    }

    // MARK: Element-wise

    private func siluNode(_ x: String, _ shape: [Int]) -> ONNXValue {
        value(graph.op("Mul", [x, graph.op("Sigmoid", [x], scope: scope)], scope: scope), shape)
    }

    func silu(_ x: ONNXValue) throws -> ONNXValue { siluNode(x.name, x.shape) }

    /// Exact GELU, 0.5·x·(1 + erf(x/√2)) (the pattern TensorRT fuses; opset 20's Gelu is not in opset 19).
    private func geluNode(_ x: String) -> String {
        let e = graph.op("Erf", [graph.op("Div", [x, graph.floatConstant([Float(2).squareRoot()], dims: [])], scope: scope)], scope: scope)
        let onePlus = graph.op("Add", [e, graph.floatConstant([1], dims: [])], scope: scope)
        return graph.op("Mul", [graph.op("Mul", [x, onePlus], scope: scope), graph.floatConstant([0.5], dims: [])], scope: scope)
    }

    func gelu(_ x: ONNXValue) throws -> ONNXValue { value(geluNode(x.name), x.shape) }

    func quickGELU(_ x: ONNXValue) throws -> ONNXValue {
        let s = graph.op("Sigmoid", [graph.op("Mul", [x.name, graph.floatConstant([1.702], dims: [])], scope: scope)], scope: scope)
        return value(graph.op("Mul", [x.name, s], scope: scope), x.shape)
    }

    func geglu(_ x: ONNXValue) throws -> ONNXValue {
        let half = x.shape.last! / 2
        let parts = graph.node("Split", [x.name, graph.int64Constant([Int64(half), Int64(half)])], scope: scope, outputs: 2,
                               attributes: [ONNXAttribute.int("axis", -1)])
        var shape = x.shape
        shape[shape.count - 1] = half
        return value(graph.op("Mul", [parts[0], geluNode(parts[1])], scope: scope), shape)
    }

    func add(_ a: ONNXValue, _ b: ONNXValue) throws -> ONNXValue {
        value(graph.op("Add", [a.name, b.name], scope: scope), a.shape.count >= b.shape.count ? a.shape : b.shape)
    }

    func affine(_ x: ONNXValue, scale: Float, shift: Float) throws -> ONNXValue {
        let scaled = graph.op("Mul", [x.name, graph.floatConstant([scale], dims: [])], scope: scope)
        return value(graph.op("Add", [scaled, graph.floatConstant([shift], dims: [])], scope: scope), x.shape)
    }

    func addChannelVector(_ x: ONNXValue, _ rows: ONNXValue, offset: Int) throws -> ONNXValue {
        let c = x.shape[1]
        var vector = rows.name
        if offset != 0 || rows.shape[1] != c {
            vector = graph.op("Slice", [vector, graph.int64Constant([Int64(offset)]), graph.int64Constant([Int64(offset + c)]),
                                        graph.int64Constant([1])], scope: scope)
        }
        let expanded = graph.op("Unsqueeze", [vector, graph.int64Constant([2, 3])], scope: scope)
        return value(graph.op("Add", [x.name, expanded], scope: scope), x.shape)
    }

    func resnetOutput(_ h: ONNXValue, residual: ONNXValue, block: ResnetBlock2D) throws -> ONNXValue {
        var y = graph.op("Add", [residual.name, h.name], scope: scope)
        if block.outputScaleFactor != 1 {
            y = graph.op("Mul", [y, graph.floatConstant([1 / block.outputScaleFactor], dims: [])], scope: scope)
        }
        return value(y, h.shape)
    }

    // MARK: Layout

    func concatChannels(_ a: ONNXValue, _ b: ONNXValue) throws -> ONNXValue {
        let y = graph.op("Concat", [a.name, b.name], scope: scope, attributes: [ONNXAttribute.int("axis", 1)])
        return value(y, [a.shape[0], a.shape[1] + b.shape[1], a.shape[2], a.shape[3]])
    }

    func concatColumns(_ a: ONNXValue, _ b: ONNXValue) throws -> ONNXValue {
        let y = graph.op("Concat", [a.name, b.name], scope: scope, attributes: [ONNXAttribute.int("axis", 1)])
        return value(y, [a.shape[0], a.shape[1] + b.shape[1]])
    }

    func channelsToTokens(_ x: ONNXValue) throws -> ONNXValue {
        let flat = graph.op("Reshape", [x.name, graph.int64Constant([0, 0, -1])], scope: scope)
        let y = graph.op("Transpose", [flat], scope: scope, attributes: [ONNXAttribute.ints("perm", [0, 2, 1])])
        return value(y, [x.shape[0], x.shape[2] * x.shape[3], x.shape[1]])
    }

    /// The run-time [H, W] of the level whose trace size is (height, width).
    private func spatialSize(height: Int, width: Int) throws -> String {
        guard let source = spatialSources[[height, width]] else {
            throw ONNXExportError("no tensor of spatial size \(height)×\(width) to take a run-time size from")
        }
        if let s = spatialShapes[source] { return s }
        let s = graph.op("Shape", [source], scope: scope, attributes: [ONNXAttribute.int("start", 2)])
        spatialShapes[source] = s
        return s
    }

    func tokensToChannels(_ x: ONNXValue, height: Int, width: Int, residual: ONNXValue?) throws -> ONNXValue {
        let channelsFirst = graph.op("Transpose", [x.name], scope: scope, attributes: [ONNXAttribute.ints("perm", [0, 2, 1])])
        let target = graph.op("Concat", [graph.int64Constant([0, 0]), try spatialSize(height: height, width: width)], scope: scope,
                              attributes: [ONNXAttribute.int("axis", 0)])
        var y = graph.op("Reshape", [channelsFirst, target], scope: scope)
        if let residual { y = graph.op("Add", [y, residual.name], scope: scope) }
        return value(y, [x.shape[0], x.shape[2], height, width])
    }

    /// Nearest resize to the size of the level's tensor at run time (diffusers' `upsample_size`), so odd latent
    /// sizes work as they do in diffusers.
    func upsampleNearest(_ x: ONNXValue, height: Int, width: Int) throws -> ONNXValue {
        let leading = graph.op("Shape", [x.name], scope: scope, attributes: [ONNXAttribute.int("end", 2)])
        let sizes = graph.op("Concat", [leading, try spatialSize(height: height, width: width)], scope: scope,
                             attributes: [ONNXAttribute.int("axis", 0)])
        let y = graph.op("Resize", [x.name, "", "", sizes], scope: scope, attributes: [
            ONNXAttribute.string("mode", "nearest"), ONNXAttribute.string("coordinate_transformation_mode", "asymmetric"),
            ONNXAttribute.string("nearest_mode", "floor"),
        ])
        return value(y, [x.shape[0], x.shape[1], height, width])
    }

    func padRightBottom(_ x: ONNXValue) throws -> ONNXValue {
        let y = graph.op("Pad", [x.name, graph.int64Constant([0, 0, 0, 0, 0, 0, 1, 1])], scope: scope)
        return value(y, [x.shape[0], x.shape[1], x.shape[2] + 1, x.shape[3] + 1])
    }

    func gatherRows(_ x: ONNXValue, positions: [Int]) throws -> ONNXValue {
        throw ONNXExportError("gathering rows (text encoders' pooled output) is not exported")
    }

    // MARK: Statistics: nothing is computed while recording.

    func absMax(_ x: ONNXValue) throws -> Float { throw ONNXExportError("the ONNX recorder computes no statistics") }
    func columnAbsMax(_ x: ONNXValue) throws -> [Float] { throw ONNXExportError("the ONNX recorder computes no statistics") }
    func rows(_ x: ONNXValue, _ indices: [Int]) throws -> [[Float]] { throw ONNXExportError("the ONNX recorder computes no statistics") }
}

/// An export that cannot be made: the message names the file, layer or option and what is allowed.
public struct ONNXExportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

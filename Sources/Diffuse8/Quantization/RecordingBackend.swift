/// Calibration's observe mode around any backend: every operation runs on `base`; every Linear and Conv2d also
/// hands its input (and, for `to_q`/`to_k`/`to_v`, its output) to the recorder, keyed by the layer's state-dict
/// name, and every attention its Q and K (for the max softmax probability). Fusions are off (`fusionPlan` is nil), so each layer is seen on its own; `base` must have prepared its
/// weights unfused (`CUDABackend(fusesLayers: false)`; the CPU never fuses).
package final class RecordingBackend<Base: ModelBackend>: ModelBackend {
    package typealias Value = Base.Value

    let base: Base
    let recorder: CalibrationRecorder

    package init(_ base: Base, recorder: CalibrationRecorder) {
        self.base = base
        self.recorder = recorder
    }

    package func fusionPlan(for model: AnyObject) -> FusionPlan? { nil }

    package func linear(_ x: Value, _ layer: Linear, residual: Value?) throws -> Value {
        let y = try base.linear(x, layer, residual: residual)
        try recorder.observe(layer, input: x, output: UNetLayerInventory.isAttentionProjection(layer.name) ? y : nil, on: base)
        return y
    }

    package func conv2d(_ x: Value, _ layer: Conv2d) throws -> Value {
        try recorder.observe(layer, input: x, on: base)
        return try base.conv2d(x, layer)
    }

    // Everything else runs on the base backend as it is.
    package func shape(of x: Value) -> [Int] { base.shape(of: x) }
    package func upload(_ x: Tensor) throws -> Value { try base.upload(x) }
    package func download(_ x: Value) throws -> Tensor { try base.download(x) }
    package func reshape(_ x: Value, _ shape: [Int]) throws -> Value { try base.reshape(x, shape) }
    package func stackedLinear(_ x: Value, _ stack: LinearStack) throws -> Value { try base.stackedLinear(x, stack) }
    package func groupNorm(_ x: Value, _ norm: GroupNorm, silu: Bool) throws -> Value { try base.groupNorm(x, norm, silu: silu) }
    package func layerNorm(_ x: Value, _ norm: LayerNorm) throws -> Value { try base.layerNorm(x, norm) }
    package func attention(query: Columns<Value>, key: Columns<Value>, value: Columns<Value>, heads: Int, causal: Bool, fp8: Bool) throws -> Value {
        if !causal { try recorder.observeAttention(query: query, key: key, heads: heads, on: base) }
        return try base.attention(query: query, key: key, value: value, heads: heads, causal: causal, fp8: fp8)
    }
    package func attentionProbabilityMax(query: Columns<Value>, key: Columns<Value>, heads: Int) throws -> Float? {
        try base.attentionProbabilityMax(query: query, key: key, heads: heads)
    }
    package func fp8Attention(query: Columns<Value>, key: Columns<Value>, value: Columns<Value>, heads: Int, probabilityAmax: Float,
                              module: MultiHeadAttention) throws -> Value {
        try base.fp8Attention(query: query, key: key, value: value, heads: heads, probabilityAmax: probabilityAmax, module: module)
    }
    package func silu(_ x: Value) throws -> Value { try base.silu(x) }
    package func gelu(_ x: Value) throws -> Value { try base.gelu(x) }
    package func quickGELU(_ x: Value) throws -> Value { try base.quickGELU(x) }
    package func geglu(_ x: Value) throws -> Value { try base.geglu(x) }
    package func add(_ a: Value, _ b: Value) throws -> Value { try base.add(a, b) }
    package func affine(_ x: Value, scale: Float, shift: Float) throws -> Value { try base.affine(x, scale: scale, shift: shift) }
    package func addChannelVector(_ x: Value, _ rows: Value, offset: Int) throws -> Value { try base.addChannelVector(x, rows, offset: offset) }
    package func resnetOutput(_ h: Value, residual: Value, block: ResnetBlock2D) throws -> Value { try base.resnetOutput(h, residual: residual, block: block) }
    package func concatChannels(_ a: Value, _ b: Value) throws -> Value { try base.concatChannels(a, b) }
    package func concatColumns(_ a: Value, _ b: Value) throws -> Value { try base.concatColumns(a, b) }
    package func channelsToTokens(_ x: Value) throws -> Value { try base.channelsToTokens(x) }
    package func tokensToChannels(_ x: Value, height: Int, width: Int, residual: Value?) throws -> Value {
        try base.tokensToChannels(x, height: height, width: width, residual: residual)
    }
    package func upsampleNearest(_ x: Value, height: Int, width: Int) throws -> Value { try base.upsampleNearest(x, height: height, width: width) }
    package func padRightBottom(_ x: Value) throws -> Value { try base.padRightBottom(x) }
    package func gatherRows(_ x: Value, positions: [Int]) throws -> Value { try base.gatherRows(x, positions: positions) }
    package func absMax(_ x: Value) throws -> Float { try base.absMax(x) }
    package func columnAbsMax(_ x: Value) throws -> [Float] { try base.columnAbsMax(x) }
    package func rows(_ x: Value, _ indices: [Int]) throws -> [[Float]] { try base.rows(x, indices) }
}

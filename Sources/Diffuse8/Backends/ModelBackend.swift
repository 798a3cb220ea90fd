/// The operations a model definition is written against: the one forward of each model (UNet, CLIP text encoder,
/// VAE) calls these and nothing else, so the same code runs on the CPU (`CPUBackend`, FP32) and on NVIDIA GPUs
/// (`CUDABackend`, FP16/BF16).
///
/// A layer argument (`Linear`, `Conv2d`, `GroupNorm`, `LayerNorm`) is the model's own parameter object, named by its
/// diffusers state-dict key; the backend runs it on the weights it prepared for that object at load time (the CPU
/// reads the host tensors directly, CUDA looks up its device copy). A layer whose weight is quantized
/// (`Linear.quantization`) runs the backend's 8-bit path for that weight kind.
///
/// Backends may prepare weights with cross-layer fusions (`fusionPlan(for:)`); the model code then asks for the fused
/// forms (`stackedLinear`, `FusionPlan`) and the results agree with the unfused ones up to the storage type's rounding.
///
/// Shapes: feature maps NCHW, token sequences [batch, tokens, channels], vectors [batch, width]. Every operation
/// returns a new value; inputs are never modified.
public protocol ModelBackend: AnyObject {
    /// A tensor living on this backend.
    associatedtype Value

    /// The fusions this backend prepared `model`'s weights with (a `UNet2DConditionModel`, `CLIPTextModel` or
    /// `AutoencoderKL`: stacked Q/K/V, stacked time projections with conv biases folded in, stacked cross-attention
    /// keys/values), or nil when it runs every layer as it is. The CPU never fuses (it is the reference); CUDA does,
    /// unless prepared for calibration.
    func fusionPlan(for model: AnyObject) -> FusionPlan?

    func shape(of x: Value) -> [Int]
    func upload(_ x: Tensor) throws -> Value
    func download(_ x: Value) throws -> Tensor
    /// The same data seen with another shape of equal element count.
    func reshape(_ x: Value, _ shape: [Int]) throws -> Value

    // MARK: Layers

    /// `layer(x)` over the last dimension, plus `residual` (the output's shape) when given.
    func linear(_ x: Value, _ layer: Linear, residual: Value?) throws -> Value
    /// Several Linear layers with the same input as one product (fusing backends only): [..., Σ out].
    func stackedLinear(_ x: Value, _ stack: LinearStack) throws -> Value
    /// `layer(x)` on NCHW. With a fusion plan, the biases it folded elsewhere are left out.
    func conv2d(_ x: Value, _ layer: Conv2d) throws -> Value
    func groupNorm(_ x: Value, _ norm: GroupNorm, silu: Bool) throws -> Value
    /// `groupNorm(x, norm, silu:)` whose result `reader` alone reads; may come back quantized for it, as
    /// `layerNorm(_:_:readBy:)`. The default is `groupNorm(x, norm, silu:)`.
    func groupNorm(_ x: Value, _ norm: GroupNorm, silu: Bool, readBy reader: Conv2d) throws -> Value
    /// `channelsToTokens(groupNorm(x, norm, silu: false))`, whose [N, H·W, C] tokens `reader` alone reads; may come
    /// back quantized for it, as `layerNorm(_:_:readBy:)`. The default is exactly that.
    func groupNormTokens(_ x: Value, _ norm: GroupNorm, readBy reader: Linear) throws -> Value
    func layerNorm(_ x: Value, _ norm: LayerNorm) throws -> Value
    /// `layerNorm(x, norm)` whose result is read by `readers` and nothing else. A backend that runs exactly those
    /// layers as one 8-bit product may return the result already quantized for it (the producer writes the 8-bit
    /// input, saving a pass); the value is then only good as their input. The default is `layerNorm(x, norm)`.
    func layerNorm(_ x: Value, _ norm: LayerNorm, readBy readers: [Linear]) throws -> Value
    /// Multi-head scaled dot-product attention (scale 1/√head_dim) on column ranges of token tensors, so that a
    /// fused Q/K/V product is read in place. `causal`: query i sees keys 0…i (CLIP). `fp8`: level-4 FP8 attention
    /// (Q, K, V arrive FP8-rounded from their projections; the softmax probabilities are FP8-rounded before P·V).
    func attention(query: Columns<Value>, key: Columns<Value>, value: Columns<Value>, heads: Int,
                   causal: Bool, fp8: Bool) throws -> Value
    /// `attention(…, causal: false, fp8: false)` of `module`, which a backend may name in its per-layer report. The
    /// default is exactly that attention.
    func attention(query: Columns<Value>, key: Columns<Value>, value: Columns<Value>, heads: Int,
                   module: MultiHeadAttention) throws -> Value
    /// Level-4 FP8 attention of `module` whose softmax probabilities are rounded to FP8 with scale
    /// `probabilityAmax` / 448 (saturating at `probabilityAmax`; 1 when not calibrated); see `FP8AttentionSimulation`.
    /// The result is read by `module.output` alone and may come back quantized for it, as `layerNorm(_:_:readBy:)`.
    /// The default runs `attention(…, fp8: true)`, i.e. amax 1, for backends that have no calibrated probability
    /// range yet.
    func fp8Attention(query: Columns<Value>, key: Columns<Value>, value: Columns<Value>, heads: Int,
                      probabilityAmax: Float, module: MultiHeadAttention) throws -> Value

    // MARK: Element-wise

    func silu(_ x: Value) throws -> Value
    /// Exact (erf) GELU.
    func gelu(_ x: Value) throws -> Value
    /// CLIP's quick GELU, x·σ(1.702x).
    func quickGELU(_ x: Value) throws -> Value
    /// diffusers' GEGLU tail: the last dimension split in halves a, b → a · gelu(b) (exact GELU).
    func geglu(_ x: Value) throws -> Value
    /// `geglu(x)` whose result `reader` alone reads; may come back quantized for it, as `layerNorm(_:_:readBy:)`.
    func geglu(_ x: Value, readBy reader: Linear) throws -> Value
    /// `geglu(readBy: reader)` of `projection`'s output on x (diffusers' `GEGLU` module); a backend may compute the
    /// projection and the gating in one kernel.
    func gegluProjection(_ x: Value, _ projection: Linear, readBy reader: Linear) throws -> Value
    func add(_ a: Value, _ b: Value) throws -> Value
    /// scale · x + shift.
    func affine(_ x: Value, scale: Float, shift: Float) throws -> Value
    /// x[n, c, :, :] + rows[n, offset + c]: a per-image channel vector (time embeddings) read from a wider row.
    func addChannelVector(_ x: Value, _ rows: Value, offset: Int) throws -> Value
    /// A resnet's output (conv2 result `h` + `residual`) / `output_scale_factor`; with a fusion plan the conv2 and
    /// shortcut biases a fusion plan folded out are added here.
    func resnetOutput(_ h: Value, residual: Value, block: ResnetBlock2D) throws -> Value
    /// `addChannelVector(conv2d(x, layer), rows, offset:)`: a resnet's conv1 and its time embedding, one operation so
    /// that a backend may fuse them.
    func conv2d(_ x: Value, _ layer: Conv2d, addingChannelVector rows: Value, offset: Int) throws -> Value
    /// `resnetOutput(conv2d(h, layer), residual:, block:)`: a resnet's conv2 and its output, one operation so that a
    /// backend may fuse them.
    func resnetOutput(convolving h: Value, _ layer: Conv2d, residual: Value, block: ResnetBlock2D) throws -> Value

    // MARK: Layout

    /// NCHW concatenation along channels (`torch.cat(dim=1)`).
    func concatChannels(_ a: Value, _ b: Value) throws -> Value
    /// [B, a] ++ [B, b] → [B, a + b].
    func concatColumns(_ a: Value, _ b: Value) throws -> Value
    /// NCHW → [N, H·W, C].
    func channelsToTokens(_ x: Value) throws -> Value
    /// [N, H·W, C] → NCHW, plus `residual` (NCHW) when given.
    func tokensToChannels(_ x: Value, height: Int, width: Int, residual: Value?) throws -> Value
    /// `F.interpolate(size=(height, width), mode="nearest")` on NCHW (2× is the common case).
    func upsampleNearest(_ x: Value, height: Int, width: Int) throws -> Value
    /// `upsampleNearest(x, height:, width:)` whose result `reader` alone reads; may come back quantized for it, as
    /// `groupNorm(_:_:silu:readBy:)`. The default is `upsampleNearest(x, height:, width:)`.
    func upsampleNearest(_ x: Value, height: Int, width: Int, readBy reader: Conv2d) throws -> Value
    /// `F.pad(x, (0, 1, 0, 1))`: one zero column on the right and one zero row at the bottom of NCHW.
    func padRightBottom(_ x: Value) throws -> Value
    /// Rows x[b, positions[b], :] of a token tensor [B, L, C] → [B, C] (CLIP's pooled output).
    func gatherRows(_ x: Value, positions: [Int]) throws -> Value

    // MARK: Statistics (calibration), returned to the host

    /// max |x| over every element.
    func absMax(_ x: Value) throws -> Float
    /// max |x[..., j]| per column j of the last dimension.
    func columnAbsMax(_ x: Value) throws -> [Float]
    /// Rows `indices` of x seen as [rows, last dimension], in the order given.
    func rows(_ x: Value, _ indices: [Int]) throws -> [[Float]]
    /// The largest softmax probability of attention with these Q and K (max over batches, heads and query rows of
    /// softmax(Q·Kᵀ/√d)), or nil where the backend does not compute it (the default: on the host it would cost a
    /// second attention per call).
    func attentionProbabilityMax(query: Columns<Value>, key: Columns<Value>, heads: Int) throws -> Float?
}

extension ModelBackend {
    public func layerNorm(_ x: Value, _ norm: LayerNorm, readBy readers: [Linear]) throws -> Value { try layerNorm(x, norm) }
    public func groupNorm(_ x: Value, _ norm: GroupNorm, silu: Bool, readBy reader: Conv2d) throws -> Value {
        try groupNorm(x, norm, silu: silu)
    }
    public func groupNormTokens(_ x: Value, _ norm: GroupNorm, readBy reader: Linear) throws -> Value {
        try channelsToTokens(groupNorm(x, norm, silu: false))
    }
    public func upsampleNearest(_ x: Value, height: Int, width: Int, readBy reader: Conv2d) throws -> Value {
        try upsampleNearest(x, height: height, width: width)
    }
    public func attention(query: Columns<Value>, key: Columns<Value>, value: Columns<Value>, heads: Int,
                          module: MultiHeadAttention) throws -> Value {
        try attention(query: query, key: key, value: value, heads: heads, causal: false, fp8: false)
    }
    public func fp8Attention(query: Columns<Value>, key: Columns<Value>, value: Columns<Value>, heads: Int,
                             probabilityAmax: Float, module: MultiHeadAttention) throws -> Value {
        try attention(query: query, key: key, value: value, heads: heads, causal: false, fp8: true)
    }
    public func attentionProbabilityMax(query: Columns<Value>, key: Columns<Value>, heads: Int) throws -> Float? { nil }
    public func geglu(_ x: Value, readBy reader: Linear) throws -> Value { try geglu(x) }
    public func conv2d(_ x: Value, _ layer: Conv2d, addingChannelVector rows: Value, offset: Int) throws -> Value {
        try addChannelVector(conv2d(x, layer), rows, offset: offset)
    }
    public func resnetOutput(convolving h: Value, _ layer: Conv2d, residual: Value, block: ResnetBlock2D) throws -> Value {
        try resnetOutput(conv2d(h, layer), residual: residual, block: block)
    }
    public func gegluProjection(_ x: Value, _ projection: Linear, readBy reader: Linear) throws -> Value {
        try geglu(linear(x, projection, residual: nil), readBy: reader)
    }

    /// Q, K and V of a self-attention `module` on tokens x: one product read as three column ranges when the plan
    /// stacked them, else three products.
    func selfAttentionProjections(_ x: Value, query: Linear, key: Linear, value: Linear, module: AnyObject,
                                  plan: FusionPlan?) throws -> (Columns<Value>, Columns<Value>, Columns<Value>) {
        let channels = query.outFeatures
        if let stack = plan?.selfProjections[ObjectIdentifier(module)] {
            let qkv = try stackedLinear(x, stack)
            return (Columns(qkv, offset: 0, width: channels), Columns(qkv, offset: channels, width: channels),
                    Columns(qkv, offset: 2 * channels, width: channels))
        }
        return (Columns(try linear(x, query, residual: nil), width: channels),
                Columns(try linear(x, key, residual: nil), width: channels),
                Columns(try linear(x, value, residual: nil), width: channels))
    }
}

/// A range of columns (the last dimension) of a token tensor [B, L, width]: `width` channels starting at `offset`.
public struct Columns<Value> {
    public var tensor: Value
    public var offset: Int
    public var width: Int

    public init(_ tensor: Value, offset: Int = 0, width: Int) {
        self.tensor = tensor
        self.offset = offset
        self.width = width
    }
}

/// Linear layers that read the same input, stacked along the output dimension into one weight
/// ([Σ out, in]; biases stacked with zeros for missing ones, plus optional extra terms folded in). The stacked
/// tensors are made only when a backend prepares them (`makeWeight`, `makeBias`), so a plan costs no host memory.
public final class LinearStack {
    /// The stacked layers in order; output columns of layer i start at `offsets[i]`.
    public let layers: [Linear]
    public let offsets: [Int]
    public let outFeatures: Int
    let extraBias: [Float]?

    /// - Parameter extraBias: added to the stacked bias (Σ out values), e.g. a conv bias folded in.
    public init(_ layers: [Linear], extraBias: [Float]? = nil) throws {
        guard let first = layers.first, layers.allSatisfy({ $0.inFeatures == first.inFeatures }) else {
            throw ModelBackendError("stacked Linear layers must exist and share their input width: \(layers.map(\.name))")
        }
        var offsets: [Int] = [], total = 0
        for l in layers { offsets.append(total); total += l.outFeatures }
        if let extraBias, extraBias.count != total {
            throw ModelBackendError("folded bias has \(extraBias.count) values for \(total) outputs")
        }
        self.layers = layers
        self.offsets = offsets
        outFeatures = total
        self.extraBias = extraBias
    }

    public var inFeatures: Int { layers[0].inFeatures }

    /// [Σ out, in].
    public func makeWeight() -> Tensor {
        Tensor(shape: [outFeatures, inFeatures], scalars: layers.flatMap(\.weight.scalars))
    }

    /// [Σ out], or nil when no layer has a bias and nothing was folded in.
    public func makeBias() -> Tensor? {
        guard layers.contains(where: { $0.bias != nil }) || extraBias != nil else { return nil }
        var b = layers.flatMap { $0.bias?.scalars ?? [Float](repeating: 0, count: $0.outFeatures) }
        if let extraBias { for i in b.indices { b[i] += extraBias[i] } }
        return Tensor(shape: [outFeatures], scalars: b)
    }
}

/// A model/backend mismatch found while running (a shape the model cannot take, a layer the backend did not prepare).
public struct ModelBackendError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

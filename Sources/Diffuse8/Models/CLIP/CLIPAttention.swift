/// transformers' `CLIPAttention` as the text model runs it: multi-head self-attention with a causal
/// mask (token i sees tokens 0…i), `q_proj`/`k_proj`/`v_proj`/`out_proj` with biases, scale head_dim^-½.
///
/// No padding mask: like diffusers' pipelines, which call the text encoder without an attention_mask.
public final class CLIPAttention {
    public let queryProjection: Linear
    public let keyProjection: Linear
    public let valueProjection: Linear
    public let outputProjection: Linear
    public let heads: Int

    /// Loads `<prefix>.q_proj`, `.k_proj`, `.v_proj`, `.out_proj`.
    public init(_ store: TensorStore, _ prefix: String, heads: Int) throws {
        queryProjection = try Linear(store, prefix + ".q_proj")
        keyProjection = try Linear(store, prefix + ".k_proj")
        valueProjection = try Linear(store, prefix + ".v_proj")
        outputProjection = try Linear(store, prefix + ".out_proj")
        self.heads = heads
    }

    /// x: [batch, tokens, hidden] → [batch, tokens, hidden].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let attended = Self.causalAttention(query: queryProjection(x), key: keyProjection(x),
                                            value: valueProjection(x), heads: heads)
        return outputProjection(attended)
    }

    /// Causal scaled dot-product attention (`F.scaled_dot_product_attention(is_causal=True)`) on heads
    /// split from the channel dimension. q, k, v: [B, L, H·D] → [B, L, H·D]. Query i attends to keys 0…i.
    ///
    /// A plain loop (CLIP sequences are 77 tokens); kept here rather than in `CPUKernels.attention`,
    /// which stays mask-free.
    public static func causalAttention(query q: Tensor, key k: Tensor, value v: Tensor, heads: Int) -> Tensor {
        let batch = q.shape[0], length = q.shape[1], channels = q.shape[2]
        precondition(k.shape == q.shape && v.shape == q.shape && channels % heads == 0,
                     "causalAttention: q \(q.shape), k \(k.shape), v \(v.shape) with \(heads) heads")
        let d = channels / heads
        let scale = 1 / Float(d).squareRoot()
        return Tensor(shape: q.shape) { out in
            q.scalars.withUnsafeBufferPointer { qp in
                k.scalars.withUnsafeBufferPointer { kp in
                    v.scalars.withUnsafeBufferPointer { vp in
                        parallelFor(batch * heads * length, minChunk: 16) { range in
                            var scores = [Float](repeating: 0, count: length)
                            scores.withUnsafeMutableBufferPointer { sp in
                                for item in range {
                                    let i = item % length, bh = item / length
                                    let h = bh % heads, b = bh / heads
                                    let visible = i + 1
                                    let qi = qp.baseAddress! + (b * length + i) * channels + h * d
                                    for j in 0..<visible {
                                        let kj = kp.baseAddress! + (b * length + j) * channels + h * d
                                        var acc: Float = 0
                                        for t in 0..<d { acc += qi[t] * kj[t] }
                                        sp[j] = acc * scale
                                    }
                                    CPUKernels.softmaxRow(sp.baseAddress!, visible)
                                    let oi = out.baseAddress! + (b * length + i) * channels + h * d
                                    for t in 0..<d { oi[t] = 0 }
                                    for j in 0..<visible {
                                        let p = sp[j]
                                        let vj = vp.baseAddress! + (b * length + j) * channels + h * d
                                        for t in 0..<d { oi[t] += p * vj[t] }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

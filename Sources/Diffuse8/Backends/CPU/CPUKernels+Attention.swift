#if canImport(Glibc)
import Glibc
#endif

extension CPUKernels {
    /// Multi-head scaled dot-product attention, `F.scaled_dot_product_attention` on heads split from
    /// the channel dimension. q: [B, Lq, H·D], k and v: [B, Lk, H·D] → [B, Lq, H·D].
    ///
    /// Fused: each worker holds one score row (Lk floats) at a time; the full score matrix never exists.
    public static func attention(query q: Tensor, key k: Tensor, value v: Tensor, heads: Int, scale: Float? = nil) -> Tensor {
        let batch = q.shape[0], lq = q.shape[1], channels = q.shape[2], lk = k.shape[1]
        precondition(channels % heads == 0 && k.shape[2] == channels && v.shape == k.shape)
        let d = channels / heads
        let s = scale ?? 1 / Float(d).squareRoot()
        return Tensor(shape: [batch, lq, channels]) { out in
            q.scalars.withUnsafeBufferPointer { qp in
                k.scalars.withUnsafeBufferPointer { kp in
                    v.scalars.withUnsafeBufferPointer { vp in
                        parallelFor(batch * heads * lq, minChunk: 8) { range in
                            var scores = [Float](repeating: 0, count: lk)
                            scores.withUnsafeMutableBufferPointer { sp in
                                for item in range {
                                    let i = item % lq, bh = item / lq
                                    let h = bh % heads, b = bh / heads
                                    let qi = qp.baseAddress! + (b * lq + i) * channels + h * d
                                    for j in 0..<lk {
                                        let kj = kp.baseAddress! + (b * lk + j) * channels + h * d
                                        var acc: Float = 0
                                        for t in 0..<d { acc += qi[t] * kj[t] }
                                        sp[j] = acc * s
                                    }
                                    softmaxRow(sp.baseAddress!, lk)
                                    let oi = out.baseAddress! + (b * lq + i) * channels + h * d
                                    for t in 0..<d { oi[t] = 0 }
                                    for j in 0..<lk {
                                        let p = sp[j]
                                        let vj = vp.baseAddress! + (b * lk + j) * channels + h * d
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

extension CPUKernels {
    /// Queries per attention work item: one block of scores (queryBlock × Lk floats) per worker.
    static let attentionQueryBlock = 96

    /// Multi-head scaled dot-product attention, `F.scaled_dot_product_attention` on heads split from
    /// the channel dimension. q: [B, Lq, H·D], k and v: [B, Lk, H·D] → [B, Lq, H·D].
    ///
    /// Fused per (batch, head, block of `attentionQueryBlock` queries): S = Q·Kᵀ through the SGEMM
    /// (K read in place as a transposed B), a vectorised softmax over each row of S (unnormalised; the
    /// 1/Σ is applied to the output rows), then O = P·V through the SGEMM (V read in place as a
    /// row-major B), written straight into the head's channels of the output. Each worker holds one
    /// block of scores at a time; the full score matrix never exists.
    public static func attention(query q: Tensor, key k: Tensor, value v: Tensor, heads: Int, scale: Float? = nil) -> Tensor {
        let batch = q.shape[0], lq = q.shape[1], channels = q.shape[2], lk = k.shape[1]
        precondition(channels % heads == 0 && k.shape[2] == channels && v.shape == k.shape,
                     "attention: query \(q.shape), key \(k.shape), value \(v.shape) do not fit \(heads) heads")
        let d = channels / heads
        let s = scale ?? 1 / Float(d).squareRoot()
        let block = attentionQueryBlock
        let queryBlocks = (lq + block - 1) / block
        return Tensor(shape: [batch, lq, channels]) { out in
            q.scalars.withUnsafeBufferPointer { qp in
                k.scalars.withUnsafeBufferPointer { kp in
                    v.scalars.withUnsafeBufferPointer { vp in
                        parallelForDynamic(batch * heads * queryBlocks) { item in
                            let qb = item % queryBlocks, bh = item / queryBlocks
                            let h = bh % heads, b = bh / heads
                            let i0 = qb * block, rows = min(block, lq - i0)
                            let qBase = qp.baseAddress! + (b * lq + i0) * channels + h * d
                            let kBase = kp.baseAddress! + b * lk * channels + h * d
                            let vBase = vp.baseAddress! + b * lk * channels + h * d
                            let oBase = out.baseAddress! + (b * lq + i0) * channels + h * d
                            ScratchPool.with(count: block * lk + block) { scratch in
                                let scores = scratch, inverseSums = scratch + block * lk
                                Gemm.multiply(m: rows, n: lk, k: d, a: qBase, lda: channels, b: kBase, ldb: channels,
                                              bLayout: .transposed, c: scores, ldc: lk, parallel: false)
                                for r in 0..<rows {
                                    inverseSums[r] = 1 / VectorMath.exponentiateRow(scores + r * lk, count: lk, scale: s)
                                }
                                Gemm.multiply(m: rows, n: d, k: lk, a: scores, lda: lk, b: vBase, ldb: channels,
                                              bLayout: .rowMajor, c: oBase, ldc: channels, parallel: false)
                                for r in 0..<rows {
                                    VectorMath.scale(oBase + r * channels, count: d, by: inverseSums[r])
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

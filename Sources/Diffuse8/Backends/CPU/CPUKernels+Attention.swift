extension CPUKernels {
    /// Queries per attention work item: one block of scores (queryBlock × Lk floats) per worker.
    static let attentionQueryBlock = 96

    /// Multi-head scaled dot-product attention, `F.scaled_dot_product_attention` on heads split from
    /// the channel dimension. q: [B, Lq, H·D], k and v: [B, Lk, H·D] → [B, Lq, H·D].
    ///
    /// Each head's K (as a transposed B) and V (as a row-major B) are packed once for the SGEMM. Then,
    /// fused per (batch, head, block of `attentionQueryBlock` queries): S = Q·Kᵀ (Q read in place), a
    /// vectorised softmax over each row of S (unnormalised; the 1/Σ is applied to the output rows), and
    /// O = P·V written straight into the head's channels of the output. Each worker holds one
    /// block of scores at a time; the full score matrix never exists.
    ///
    /// `causal`: query i sees keys 0…i only (`is_causal=True`, the lower-triangular mask CLIP's text
    /// encoder uses); masked scores are zero after the softmax, so P·V needs no special case.
    public static func attention(query q: Tensor, key k: Tensor, value v: Tensor, heads: Int, scale: Float? = nil,
                                 causal: Bool = false) -> Tensor {
        let batch = q.shape[0], lq = q.shape[1], channels = q.shape[2], lk = k.shape[1]
        precondition(channels % heads == 0 && k.shape[2] == channels && v.shape == k.shape,
                     "attention: query \(q.shape), key \(k.shape), value \(v.shape) do not fit \(heads) heads")
        precondition(!causal || lq == lk, "causal attention needs as many queries as keys, got \(lq) and \(lk)")
        let d = channels / heads
        let s = scale ?? 1 / Float(d).squareRoot()
        let block = attentionQueryBlock
        let queryBlocks = (lq + block - 1) / block
        let keysCount = Gemm.packedBCount(k: d, n: lk), valuesCount = Gemm.packedBCount(k: lk, n: d)
        let perHead = keysCount + valuesCount
        let vPadded = Gemm.paddedColumns(d), kPadded = Gemm.paddedColumns(lk)
        return Tensor(shape: [batch, lq, channels]) { out in
            q.scalars.withUnsafeBufferPointer { qp in
                k.scalars.withUnsafeBufferPointer { kp in
                    v.scalars.withUnsafeBufferPointer { vp in
                        ScratchPool.with(count: batch * heads * perHead) { packed in
                            // Keys and values are packed once per head and shared by all its query blocks.
                            parallelForDynamic(batch * heads) { bh in
                                let h = bh % heads, b = bh / heads
                                let offset = b * lk * channels + h * d
                                Gemm.packB(k: d, n: lk, b: kp.baseAddress! + offset, ldb: channels, layout: .transposed,
                                           into: packed + bh * perHead)
                                Gemm.packB(k: lk, n: d, b: vp.baseAddress! + offset, ldb: channels, layout: .rowMajor,
                                           into: packed + bh * perHead + keysCount)
                            }
                            parallelForDynamic(batch * heads * queryBlocks) { item in
                                let qb = item % queryBlocks, bh = item / queryBlocks
                                let h = bh % heads, b = bh / heads
                                let i0 = qb * block, rows = min(block, lq - i0)
                                let qBase = qp.baseAddress! + (b * lq + i0) * channels + h * d
                                let oBase = out.baseAddress! + (b * lq + i0) * channels + h * d
                                let keys = UnsafePointer(packed + bh * perHead), values = keys + keysCount
                                ScratchPool.with(count: block * lk + block) { scratch in
                                    let scores = scratch, inverseSums = scratch + block * lk
                                    Gemm.multiply(m: rows, n: lk, k: d, a: qBase, lda: channels, b: keys, ldb: 0,
                                                  bLayout: .prepacked(keys, paddedColumns: kPadded), c: scores, ldc: lk,
                                                  parallel: false)
                                    for r in 0..<rows {
                                        let visible = causal ? i0 + r + 1 : lk
                                        inverseSums[r] = 1 / VectorMath.exponentiateRow(scores + r * lk, count: visible, scale: s)
                                        if visible < lk { (scores + r * lk + visible).update(repeating: 0, count: lk - visible) }
                                    }
                                    Gemm.multiply(m: rows, n: d, k: lk, a: scores, lda: lk, b: values, ldb: 0,
                                                  bLayout: .prepacked(values, paddedColumns: vPadded), c: oBase, ldc: channels,
                                                  parallel: false)
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
}

/// Single-precision matrix multiplication on the CPU.
enum Gemm {
    /// C[m×n] = A[m×k] · B[n×k]ᵀ, all row-major and contiguous. C is overwritten.
    ///
    /// Reference path: row-parallel dot products (both operands are contiguous along k).
    static func multiplyTransposedB(a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>,
                                    m: Int, n: Int, k: Int) {
        parallelFor(m) { rows in
            for i in rows {
                let ai = a + i * k
                for j in 0..<n {
                    let bj = b + j * k
                    var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0
                    var p = 0
                    while p + 4 <= k {
                        s0 += ai[p] * bj[p]; s1 += ai[p + 1] * bj[p + 1]
                        s2 += ai[p + 2] * bj[p + 2]; s3 += ai[p + 3] * bj[p + 3]
                        p += 4
                    }
                    while p < k { s0 += ai[p] * bj[p]; p += 1 }
                    c[i * n + j] = (s0 + s1) + (s2 + s3)
                }
            }
        }
    }
}

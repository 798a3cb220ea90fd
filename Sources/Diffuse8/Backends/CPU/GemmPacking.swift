/// Packing routines of the SGEMM: copy a K slice of A or B into the sliver layout the micro-kernel
/// reads with unit stride. Slivers past the matrix edge are zero-filled, so the kernel never branches
/// on edges inside its inner loop.
enum GemmPacking {
    static let mr = GemmMicroKernel.mr
    static let nr = GemmMicroKernel.nr

    /// A(i, p) = a[i·lda + p] for i < rows, p < depth → slivers of MR rows: out[s·MR·depth + p·MR + r].
    @inline(__always)
    static func packA(_ a: UnsafePointer<Float>, lda: Int, rows: Int, depth: Int, into out: UnsafeMutablePointer<Float>) {
        let slivers = (rows + mr - 1) / mr
        for s in 0..<slivers {
            let dst = out + s * mr * depth
            let r0 = s * mr
            if r0 + mr <= rows {
                // Six row streams read in step; writes are contiguous.
                let a0 = a + r0 * lda, a1 = a0 + lda, a2 = a1 + lda, a3 = a2 + lda, a4 = a3 + lda, a5 = a4 + lda
                for p in 0..<depth {
                    let d = dst + p * mr
                    d[0] = a0[p]; d[1] = a1[p]; d[2] = a2[p]; d[3] = a3[p]; d[4] = a4[p]; d[5] = a5[p]
                }
            } else {
                for r in 0..<mr {
                    if r0 + r < rows {
                        let src = a + (r0 + r) * lda
                        for p in 0..<depth { dst[p * mr + r] = src[p] }
                    } else {
                        for p in 0..<depth { dst[p * mr + r] = 0 }
                    }
                }
            }
        }
    }

    /// B(p, j) = b[j·ldb + p] ([N, K] storage) → slivers of NR columns: out[s·NR·depth + p·NR + j].
    @inline(__always)
    static func packBTransposed(_ b: UnsafePointer<Float>, ldb: Int, columns: Int, depth: Int,
                                into out: UnsafeMutablePointer<Float>) {
        let slivers = (columns + nr - 1) / nr
        for s in 0..<slivers {
            let dst = out + s * nr * depth
            for j in 0..<nr {
                let column = s * nr + j
                if column < columns {
                    let src = b + column * ldb
                    for p in 0..<depth { dst[p * nr + j] = src[p] }
                } else {
                    for p in 0..<depth { dst[p * nr + j] = 0 }
                }
            }
        }
    }

    /// B(p, j) = b[p·ldb + j] ([K, N] storage) → slivers of NR columns: out[s·NR·depth + p·NR + j].
    @inline(__always)
    static func packBRowMajor(_ b: UnsafePointer<Float>, ldb: Int, columns: Int, depth: Int,
                              into out: UnsafeMutablePointer<Float>) {
        let slivers = (columns + nr - 1) / nr
        for s in 0..<slivers {
            let dst = out + s * nr * depth
            let j0 = s * nr
            if j0 + nr <= columns {
                for p in 0..<depth {
                    let v = UnsafeRawPointer(b + p * ldb + j0).loadUnaligned(as: GemmMicroKernel.Vector.self)
                    UnsafeMutableRawPointer(dst + p * nr).storeBytes(of: v, as: GemmMicroKernel.Vector.self)
                }
            } else {
                let valid = columns - j0
                for p in 0..<depth {
                    let src = b + p * ldb + j0, d = dst + p * nr
                    for j in 0..<valid { d[j] = src[j] }
                    for j in valid..<nr { d[j] = 0 }
                }
            }
        }
    }
}

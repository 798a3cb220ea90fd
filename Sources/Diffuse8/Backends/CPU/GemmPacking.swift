import CDiffuse8Kernels

/// Packing routines of the SGEMM: copy a K slice of A or B into the sliver layout the micro-kernel
/// reads with unit stride. Slivers past the matrix edge are zero-filled, so the kernel never branches
/// on edges inside its inner loop. MR and NR are the running kernel's (`CPUFloatKernel`).
enum GemmPacking {
    /// A(i, p) = a[i·lda + p] for i < rows, p < depth → slivers of MR rows: out[s·MR·depth + p·MR + r].
    @inline(__always)
    static func packA(_ a: UnsafePointer<Float>, lda: Int, rows: Int, depth: Int, mr: Int, into out: UnsafeMutablePointer<Float>) {
        d8_f32_pack_a(mr, a, lda, rows, depth, out)
    }

    /// B(p, j) = b[j·ldb + p] ([N, K] storage) → slivers of NR columns: out[s·NR·depth + p·NR + j].
    @inline(__always)
    static func packBTransposed(_ b: UnsafePointer<Float>, ldb: Int, columns: Int, depth: Int, nr: Int,
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
    static func packBRowMajor(_ b: UnsafePointer<Float>, ldb: Int, columns: Int, depth: Int, nr: Int,
                              into out: UnsafeMutablePointer<Float>) {
        let slivers = (columns + nr - 1) / nr
        for s in 0..<slivers {
            let dst = out + s * nr * depth
            let j0 = s * nr
            if j0 + nr <= columns {
                for p in 0..<depth { copyRun(b + p * ldb + j0, dst + p * nr, count: nr) }
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

    /// d[0..<count] = src[0..<count], eight floats at a time (`count` a multiple of 8: every kernel's NR).
    @inline(__always)
    static func copyRun(_ src: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>, count: Int) {
        var j = 0
        while j < count {
            UnsafeMutableRawPointer(d + j).storeBytes(of: UnsafeRawPointer(src + j).loadUnaligned(as: SIMD8<Float>.self),
                                                      as: SIMD8<Float>.self)
            j += 8
        }
    }

    /// d[0..<count] = src[0..<count] for any count: eight floats at a time, then four, then one by one (the element
    /// loop alone does not vectorize: the pointers may overlap as far as the compiler knows).
    @inline(__always)
    static func copyFloats(_ src: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>, count: Int) {
        var j = 0
        while j + 8 <= count {
            UnsafeMutableRawPointer(d + j).storeBytes(of: UnsafeRawPointer(src + j).loadUnaligned(as: SIMD8<Float>.self),
                                                      as: SIMD8<Float>.self)
            j += 8
        }
        if j + 4 <= count {
            UnsafeMutableRawPointer(d + j).storeBytes(of: UnsafeRawPointer(src + j).loadUnaligned(as: SIMD4<Float>.self),
                                                      as: SIMD4<Float>.self)
            j += 4
        }
        while j < count { d[j] = src[j]; j += 1 }
    }
}

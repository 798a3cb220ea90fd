/// The portable SGEMM micro-kernel (`CPUFloatKernel.portable`, used where no C kernel of `FloatKernels.c` runs):
/// an MR × NR block of C held in six vector accumulators, updated with one broadcast of A and one vector of B per
/// row and depth step.
///
/// Two builds (see docs/PERFORMANCE.md): with `-Xswiftc -DDIFFUSE8_FMA` (set together with an AVX2/FMA
/// target, `-Xswiftc -target-cpu -Xswiftc haswell` or `native`) the tile is 6 × 16 in `SIMD16<Float>`
/// (twelve YMM accumulators, `vfmadd231ps`); the default baseline-x86-64 build uses 6 × 8 in
/// `SIMD8<Float>` (twelve XMM accumulators, multiply + add), which fits SSE's sixteen registers.
/// `DIFFUSE8_FMA` without an FMA-capable target would turn every fused multiply-add into a call to `fmaf`.
enum GemmMicroKernel {
    #if DIFFUSE8_FMA
    typealias Vector = SIMD16<Float>
    static let nr = 16
    #else
    typealias Vector = SIMD8<Float>
    static let nr = 8
    #endif
    static let mr = 6

    /// What C holds before the product is added.
    enum Initial {
        /// C is overwritten with the product.
        case zero
        /// The product is added to C.
        case accumulate
        /// C is overwritten with the product plus `bias[j]` (pointer at this block's first column).
        case columnBias(UnsafePointer<Float>)
        /// C is overwritten with the product plus `bias[i]` (pointer at this block's first row).
        case rowBias(UnsafePointer<Float>)
    }

    @inline(__always)
    static func fma(_ acc: Vector, _ a: Vector, _ b: Vector) -> Vector {
        #if DIFFUSE8_FMA
        return acc.addingProduct(a, b)
        #else
        return acc + a * b
        #endif
    }

    /// C[0..<rows, 0..<columns] (+)= A-sliver (depth × MR) · B-sliver (depth × NR).
    @inline(never)
    static func run(depth: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                    c: UnsafeMutablePointer<Float>, ldc: Int, rows: Int, columns: Int, initial: Initial) {
        var c0 = Vector(), c1 = Vector(), c2 = Vector(), c3 = Vector(), c4 = Vector(), c5 = Vector()
        var pa = a
        var pb = UnsafeRawPointer(b)
        for _ in 0..<depth {
            let bv = pb.loadUnaligned(as: Vector.self)
            c0 = fma(c0, Vector(repeating: pa[0]), bv)
            c1 = fma(c1, Vector(repeating: pa[1]), bv)
            c2 = fma(c2, Vector(repeating: pa[2]), bv)
            c3 = fma(c3, Vector(repeating: pa[3]), bv)
            c4 = fma(c4, Vector(repeating: pa[4]), bv)
            c5 = fma(c5, Vector(repeating: pa[5]), bv)
            pa += mr
            pb += nr * MemoryLayout<Float>.stride
        }
        if rows == mr && columns == nr {
            store(c0, c, 0, initial); store(c1, c + ldc, 1, initial); store(c2, c + 2 * ldc, 2, initial)
            store(c3, c + 3 * ldc, 3, initial); store(c4, c + 4 * ldc, 4, initial); store(c5, c + 5 * ldc, 5, initial)
        } else {
            let accumulators = [c0, c1, c2, c3, c4, c5]
            for r in 0..<rows {
                let row = c + r * ldc
                let v = accumulators[r]
                for j in 0..<columns {
                    switch initial {
                    case .zero: row[j] = v[j]
                    case .accumulate: row[j] += v[j]
                    case .columnBias(let bias): row[j] = v[j] + bias[j]
                    case .rowBias(let bias): row[j] = v[j] + bias[r]
                    }
                }
            }
        }
    }

    @inline(__always)
    static func store(_ v: Vector, _ row: UnsafeMutablePointer<Float>, _ r: Int, _ initial: Initial) {
        let raw = UnsafeMutableRawPointer(row)
        switch initial {
        case .zero: raw.storeBytes(of: v, as: Vector.self)
        case .accumulate: raw.storeBytes(of: v + UnsafeRawPointer(row).loadUnaligned(as: Vector.self), as: Vector.self)
        case .columnBias(let bias): raw.storeBytes(of: v + UnsafeRawPointer(bias).loadUnaligned(as: Vector.self), as: Vector.self)
        case .rowBias(let bias): raw.storeBytes(of: v + Vector(repeating: bias[r]), as: Vector.self)
        }
    }
}

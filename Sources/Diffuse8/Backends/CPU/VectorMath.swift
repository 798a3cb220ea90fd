import CDiffuse8Kernels

/// Vectorised transcendental functions on `SIMD16<Float>` and the row kernels built on them.
///
/// `exp` is the Cephes `expf` polynomial (range reduction by ln 2 split in two, degree-5 polynomial,
/// 2ⁿ built in the exponent bits): within 2 ulp of `expf` for inputs in [-87.3, 88.3]; inputs are
/// clamped to that range, so very negative inputs give ~1e-38 instead of 0 (harmless for softmax and
/// SiLU). `erf` is Abramowitz–Stegun 7.1.26 (|error| ≤ 1.5e-7), the form PyTorch's vectorised CPU
/// `erf` uses.
enum VectorMath {
    typealias V = SIMD16<Float>
    static let width = 16

    @inline(__always)
    static func fma(_ acc: V, _ a: V, _ b: V) -> V {
        #if DIFFUSE8_FMA
        return acc.addingProduct(a, b)
        #else
        return acc + a * b
        #endif
    }

    @inline(__always)
    static func exp(_ input: V) -> V {
        let magic = V(repeating: 12582912)  // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
        var x = input.replacing(with: 88.3762626647949, where: input .> 88.3762626647949)
        x.replace(with: -87.3365447505531, where: x .< -87.3365447505531)
        let t = fma(magic, x, V(repeating: 1.44269504088896341))
        let n = t - magic
        x = fma(x, n, V(repeating: -0.693359375))
        x = fma(x, n, V(repeating: 2.12194440e-4))
        var y = V(repeating: 1.9875691500e-4)
        y = fma(V(repeating: 1.3981999507e-3), y, x)
        y = fma(V(repeating: 8.3334519073e-3), y, x)
        y = fma(V(repeating: 4.1665795894e-2), y, x)
        y = fma(V(repeating: 1.6666665459e-1), y, x)
        y = fma(V(repeating: 5.0000001201e-1), y, x)
        y = fma(x + 1, y, x * x)
        let bits = unsafeBitCast(t, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
        let scale = unsafeBitCast((bits &+ 127) &<< 23, to: V.self)
        return y * scale
    }

    /// The sum of the 16 lanes, halves added pairwise (four vector adds; `SIMD.sum()` adds lane by lane, 15 dependent
    /// scalar adds).
    @inline(__always)
    static func sum(_ v: V) -> Float {
        let eight = v.lowHalf + v.highHalf
        let four = eight.lowHalf + eight.highHalf
        let two = four.lowHalf + four.highHalf
        return two[0] + two[1]
    }

    /// x·σ(x).
    @inline(__always)
    static func silu(_ x: V) -> V { x / (1 + exp(-x)) }

    @inline(__always)
    static func erf(_ x: V) -> V {
        let a = unsafeBitCast(unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x7FFF_FFFF, to: V.self)
        let signBits = unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x8000_0000
        let t = 1 / fma(V(repeating: 1), V(repeating: 0.3275911), a)
        var r = V(repeating: 1.061405429)
        r = fma(V(repeating: -1.453152027), r, t)
        r = fma(V(repeating: 1.421413741), r, t)
        r = fma(V(repeating: -0.284496736), r, t)
        r = fma(V(repeating: 0.254829592), r, t)
        let magnitude = 1 - r * t * exp(-(a * a))
        return unsafeBitCast(unsafeBitCast(magnitude, to: SIMD16<UInt32>.self) | signBits, to: V.self)
    }

    /// Exact (erf) GELU.
    @inline(__always)
    static func gelu(_ x: V) -> V { 0.5 * x * (1 + erf(x * 0.70710678118654752)) }

    /// Whether `exponentiateRow` runs the C AVX2 loop (`d8_f32_exponentiate_row`: the same polynomial on 8 lanes
    /// with masked tails; the Swift loop below spills its 16-lane vectors and handles a row's tail lane by lane).
    /// Tests turn it off to compare both.
    nonisolated(unsafe) static var usesNativeExponentiateRow = d8_f32_exponentiate_row_supported() != 0

    /// row[i] = exp(scale·(row[i] − max)); returns Σ row. The softmax numerator of a score row.
    static func exponentiateRow(_ row: UnsafeMutablePointer<Float>, count: Int, scale: Float) -> Float {
        if usesNativeExponentiateRow { return d8_f32_exponentiate_row(row, count, scale) }
        var i = 0
        var maxVector = V(repeating: -.infinity)
        while i + width <= count {
            let v = load(row + i)
            maxVector.replace(with: v, where: v .> maxVector)  // `pointwiseMax` is not vectorised
            i += width
        }
        var maximum = maxVector.max()
        while i < count { maximum = Swift.max(maximum, row[i]); i += 1 }
        let shift = V(repeating: -maximum * scale), s = V(repeating: scale)
        var sumVector = V()
        i = 0
        while i + width <= count {
            let e = exp(fma(shift, load(row + i), s))
            store(e, row + i)
            sumVector += e
            i += width
        }
        if i < count {
            // Tail through a zero-padded vector; padding lanes are excluded from the sum.
            var tail = V(repeating: -.infinity)
            for j in 0..<(count - i) { tail[j] = row[i + j] }
            var e = exp(fma(shift, tail, s))
            for j in (count - i)..<width { e[j] = 0 }
            for j in 0..<(count - i) { row[i + j] = e[j] }
            sumVector += e
        }
        return sumVector.sum()
    }

    /// p[0..<count] *= factor.
    @inline(__always)
    static func scale(_ p: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        var i = 0
        while i + width <= count { store(load(p + i) * factor, p + i); i += width }
        while i < count { p[i] *= factor; i += 1 }
    }

    /// out[i] = f(x[i]) for i < count, 16 at a time (the tail through a padded vector).
    @inline(__always)
    static func apply(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int, _ f: (V) -> V) {
        var i = 0
        while i + width <= count { store(f(load(x + i)), out + i); i += width }
        if i < count {
            var tail = V()
            for j in 0..<(count - i) { tail[j] = x[i + j] }
            let y = f(tail)
            for j in 0..<(count - i) { out[i + j] = y[j] }
        }
    }

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always)
    static func load(_ p: UnsafeMutablePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always)
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
}

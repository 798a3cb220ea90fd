/// Scalar re-implementation of the `log256_ps` and `sincos256_ps` functions of `avx_mathfun.h` (Giovanni
/// Garberoglio's AVX port of Julien Pommier's Cephes-based `sse_mathfun`, zlib licence) exactly as torch's
/// AVX2 build computes them: float arithmetic in the same order, with fused multiply-adds where GCC contracts
/// `mul` + `add` intrinsics (`-ffp-contract=fast`). Used by `TorchGenerator` to reproduce torch's `randn`.
/// Verified bit for bit against torch 2.15 on x86-64 (see `tools/reference/rng.py`).
enum AVXMathFun {
    private static let logCoefficients: [Float] = [
        7.0376836292E-2, -1.1514610310E-1, 1.1676998740E-1, -1.2420140846E-1, 1.4249322787E-1,
        -1.6668057665E-1, 2.0000714765E-1, -2.4999993993E-1, 3.3333331174E-1,
    ]

    /// Natural logarithm of a positive normal float (torch only passes values in (0, 1]).
    @inline(__always) static func log(_ input: Float) -> Float {
        let clamped = max(input, Float(bitPattern: 0x0080_0000))
        let bits = clamped.bitPattern
        var e = Float(Int32(bitPattern: bits >> 23) - 0x7f) + 1
        // keep the mantissa, exponent of 0.5: x in [0.5, 1)
        var x = Float(bitPattern: (bits & ~UInt32(0x7f80_0000)) | Float(0.5).bitPattern)
        let below = x < Float(0.707106781186547524)
        let tmp: Float = below ? x : 0
        x = x - 1
        e = e - (below ? 1 : 0)
        x = x + tmp
        let z = x * x
        var y = logCoefficients[0]
        for k in 1..<9 { y = logCoefficients[k].addingProduct(y, x) }
        y = y * x
        y = (e * Float(-2.12194440e-4)).addingProduct(y, z)
        y = y - z * 0.5
        x = x + y
        x = x.addingProduct(e, Float(0.693359375))
        return input <= 0 ? .nan : x
    }

    /// Sine and cosine together (`sincos256_ps`), accurate for |x| < 8192.
    @inline(__always) static func sincos(_ input: Float) -> (sin: Float, cos: Float) {
        var signSin = input.sign == .minus
        var x = abs(input)
        var j = Int32(x * Float(1.27323954473516))  // truncation, like cvttps
        j = (j &+ 1) & ~1
        let y0 = Float(j)
        let swapSin = (j & 4) != 0
        let useSinPolynomial = (j & 2) == 0
        x = x.addingProduct(y0, Float(-0.78515625))
        x = x.addingProduct(y0, Float(-2.4187564849853515625e-4))
        x = x.addingProduct(y0, Float(-3.77489497744594108e-8))
        let signCos = (~(j &- 2) & 4) != 0
        signSin = signSin != swapSin
        let z = x * x
        var y = Float(2.443315711809948E-005)
        y = Float(-1.388731625493765E-003).addingProduct(y, z)
        y = Float(4.166664568298827E-002).addingProduct(y, z)
        y = y * z
        y = (-(z * 0.5)).addingProduct(y, z)
        y = y + 1
        var y2 = Float(-1.9515295891E-4)
        y2 = Float(8.3321608736E-3).addingProduct(y2, z)
        y2 = Float(-1.6666654611E-1).addingProduct(y2, z)
        y2 = y2 * z
        y2 = x.addingProduct(y2, x)
        let sinPart2: Float = useSinPolynomial ? y2 : 0
        let sinPart1: Float = useSinPolynomial ? 0 : y
        y2 = y2 - sinPart2
        y = y - sinPart1
        var sine = sinPart1 + sinPart2
        var cosine = y + y2
        if signSin { sine = -sine }
        if signCos { cosine = -cosine }
        return (sine, cosine)
    }
}

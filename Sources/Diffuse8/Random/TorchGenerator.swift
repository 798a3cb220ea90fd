#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// PyTorch's CPU random generator: `torch.Generator("cpu").manual_seed(seed)` followed by
/// `torch.randn(shape, generator=g)` in float32, bit for bit, so a seed gives the same latents as diffusers.
///
/// Reproduces (ATen, `CPUGeneratorImpl`, `core/MT19937RNGEngine.h`, `core/DistributionsHelper.h`,
/// `native/cpu/DistributionTemplates.h`):
/// - MT19937 seeded with the low 32 bits of the seed (as `at::mt19937` does; the full 64-bit seed is kept
///   only for `initialSeed`).
/// - `randn` of >= 16 elements: `normal_fill` — 24-bit float uniforms for every element, Box–Muller over
///   blocks of 16 (the first 8 are `u1`, the next 8 `u2`) in float, and when the count is not a multiple of 16
///   the last 16 uniforms are redrawn and those 16 values recomputed. torch has two float kernels for this;
///   see `NormalPath` (the default, `.avx2`, is what torch computes on x86-64 CPUs with AVX2 or AVX512).
/// - `randn` of < 16 elements: the scalar `normal_distribution<double>` path — 53-bit double uniforms from
///   two 32-bit draws, Box–Muller in double with `log1p`/`sin`/`cos`, the sine sample cached in the generator
///   and consumed by the next scalar draw (the cache survives a vectorised draw in between, as in torch).
///
/// The < 16-element path uses the platform's double `log1p`/`sin`/`cos` (glibc's in the tests); an ulp of
/// difference there almost never survives the rounding to float.
///
/// Verified bit for bit against torch 2.15 (`tools/reference/rng.py`, both kernels, debug and -Ounchecked
/// builds give the same bits). Only float32 draws: torch's float16/bfloat16 `randn` orders its draws differently.
public struct TorchGenerator: Sendable {
    /// The seed given to `init(seed:)` (torch's `initial_seed()`).
    public let initialSeed: UInt64
    private var state: [UInt32]
    private var left: Int
    private var next: Int
    /// torch's `next_double_normal_sample_`: the second Box–Muller value of the scalar path.
    private var cachedNormal: Double?

    /// Which of torch's two float Box–Muller kernels (>= 16 elements) to reproduce.
    public enum NormalPath: Sendable {
        /// torch's `CPU_CAPABILITY_AVX2` kernel, which torch also runs on AVX512 CPUs: `avx_mathfun`'s
        /// `log256_ps`/`sincos256_ps` with the FMA contractions of torch's GCC build. torch's result on any x86-64
        /// CPU with AVX2.
        case avx2
        /// torch's `DEFAULT` kernel (`ATEN_CPU_CAPABILITY=default`, CPUs without AVX2, most non-x86 builds):
        /// libm `logf`/`cosf`/`sinf`; bit-exact only with the same libm (tested against glibc).
        case libm
    }

    /// The float Box–Muller kernel this generator reproduces.
    public var normalPath: NormalPath

    private static let n = 624
    private static let m = 397

    /// Seeds like `torch.Generator("cpu").manual_seed(seed)`. Negative Python seeds correspond to their
    /// two's-complement `UInt64` (`UInt64(bitPattern:)`).
    public init(seed: UInt64, normalPath: NormalPath = .avx2) {
        initialSeed = seed
        self.normalPath = normalPath
        var s = [UInt32](repeating: 0, count: Self.n)
        s[0] = UInt32(truncatingIfNeeded: seed)
        for j in 1..<Self.n {
            s[j] = 1_812_433_253 &* (s[j - 1] ^ (s[j - 1] >> 30)) &+ UInt32(j)
        }
        state = s
        left = 1
        next = 0
        cachedNormal = nil
    }

    /// The next 32-bit MT19937 output (torch's `CPUGeneratorImpl::random()`).
    public mutating func nextUInt32() -> UInt32 {
        left -= 1
        if left == 0 { regenerate() }
        var y = state[next]
        next += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9d2c_5680
        y ^= (y << 15) & 0xefc6_0000
        y ^= y >> 18
        return y
    }

    /// torch's `random64()`: the first 32-bit draw is the high half.
    public mutating func nextUInt64() -> UInt64 {
        let high = UInt64(nextUInt32())
        let low = UInt64(nextUInt32())
        return (high << 32) | low
    }

    private mutating func regenerate() {
        let upperMask: UInt32 = 0x8000_0000, lowerMask: UInt32 = 0x7fff_ffff, matrixA: UInt32 = 0x9908_b0df
        @inline(__always) func twist(_ u: UInt32, _ v: UInt32) -> UInt32 {
            (((u & upperMask) | (v & lowerMask)) >> 1) ^ ((v & 1) != 0 ? matrixA : 0)
        }
        left = Self.n
        next = 0
        state.withUnsafeMutableBufferPointer { p in
            let n = Self.n, m = Self.m
            for k in 0..<(n - m) { p[k] = p[k + m] ^ twist(p[k], p[k + 1]) }
            for k in (n - m)..<(n - 1) { p[k] = p[k + m - n] ^ twist(p[k], p[k + 1]) }
            p[n - 1] = p[m - 1] ^ twist(p[n - 1], p[0])
        }
    }

    /// A float uniform in [0, 1) from 24 random bits (torch's `uniform_real_distribution<float>`).
    @inline(__always) private mutating func uniformFloat() -> Float {
        Float(nextUInt32() & 0x00ff_ffff) * (1.0 / 16_777_216.0)
    }

    /// A double uniform in [0, 1) from 53 random bits (torch's `uniform_real_distribution<double>`).
    @inline(__always) private mutating func uniformDouble() -> Double {
        Double(nextUInt64() & 0x001f_ffff_ffff_ffff) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One standard normal from torch's scalar path (`at::normal_distribution<double>`), with its cache.
    private mutating func scalarNormal() -> Double {
        if let cached = cachedNormal {
            cachedNormal = nil
            return cached
        }
        let u1 = uniformDouble()
        let u2 = uniformDouble()
        let r = sqrt(-2.0 * log1p(-u2))
        let theta = 2.0 * Double.pi * u1
        cachedNormal = r * sin(theta)
        return r * cos(theta)
    }

    /// Standard normal samples of `shape` as `torch.randn(shape, generator=g)` gives them in float32;
    /// successive calls continue the same stream.
    public mutating func randn(_ shape: [Int]) -> Tensor {
        let count = shape.reduce(1, *)
        if count < 16 {
            var values = [Float](repeating: 0, count: count)
            for i in 0..<count { values[i] = Float(scalarNormal()) }
            return Tensor(shape: shape, scalars: values)
        }
        var values = [Float](repeating: 0, count: count)
        for i in 0..<count { values[i] = uniformFloat() }
        values.withUnsafeMutableBufferPointer { p in
            var start = 0
            while start + 16 <= count {
                boxMuller16(p.baseAddress! + start)
                start += 16
            }
        }
        if count % 16 != 0 {
            // torch redraws the last 16 uniforms and recomputes those values.
            for j in (count - 16)..<count { values[j] = uniformFloat() }
            values.withUnsafeMutableBufferPointer { p in boxMuller16(p.baseAddress! + (count - 16)) }
        }
        return Tensor(shape: shape, scalars: values)
    }

    /// torch's `NormalFill16` for float (mean 0, std 1: the final `fma(n, std, mean)` is exact then).
    @inline(__always) private func boxMuller16(_ data: UnsafeMutablePointer<Float>) {
        switch normalPath {
        case .avx2:
            for j in 0..<8 {
                let radius = (-2 * AVXMathFun.log(1 - data[j])).squareRoot()
                let theta = Float(2.0 * Double.pi) * data[j + 8]
                let (sine, cosine) = AVXMathFun.sincos(theta)
                data[j] = radius * cosine
                data[j + 8] = radius * sine
            }
        case .libm:
            for j in 0..<8 {
                let u1: Float = 1 - data[j]
                let u2: Float = data[j + 8]
                let radius: Float = sqrtf(-2 * logf(u1))
                // `2.0f * c10::pi<double> * u2` is evaluated in double, then stored as float.
                let theta = Float(2.0 * Double.pi * Double(u2))
                data[j] = radius * cosf(theta)
                data[j + 8] = radius * sinf(theta)
            }
        }
    }
}

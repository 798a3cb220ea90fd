#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The training noise schedule shared by diffusers' schedulers, computed with the same float32 operations:
/// `torch.linspace(..., dtype=float32)` (whose CPU kernel fuses `start + step * i` into an FMA and fills the
/// second half from the end), `** 2` for `scaled_linear`, `1 - betas`, and `torch.cumprod` (which accumulates
/// in double and rounds each prefix product to float).
///
/// `sigmas` are `((1 - ᾱ) / ᾱ) ** 0.5` with a correctly rounded square root; torch's CPU kernel (MKL) can differ
/// by one float ulp there.
struct NoiseSchedule {
    let trainTimesteps: Int
    /// ᾱ_t for t = 0 ..< trainTimesteps.
    let alphasCumprod: [Float]
    /// σ_t = sqrt((1 - ᾱ_t) / ᾱ_t), ascending in t.
    let sigmas: [Float]

    init(trainTimesteps: Int, betaStart: Double, betaEnd: Double, scaledLinear: Bool) {
        self.trainTimesteps = trainTimesteps
        let betas: [Float]
        if scaledLinear {
            betas = Self.torchLinspace(pow(betaStart, 0.5), pow(betaEnd, 0.5), trainTimesteps).map { $0 * $0 }
        } else {
            betas = Self.torchLinspace(betaStart, betaEnd, trainTimesteps)
        }
        var product = 1.0
        alphasCumprod = betas.map { beta in
            product *= Double(1 - beta)
            return Float(product)
        }
        sigmas = alphasCumprod.map { ((1 - $0) / $0).squareRoot() }
    }

    /// `torch.linspace(start, end, count, dtype=torch.float32)` on the CPU, bit for bit.
    static func torchLinspace(_ start: Double, _ end: Double, _ count: Int) -> [Float] {
        let first = Float(start), last = Float(end)
        if count == 1 { return [first] }
        let step = (last - first) / Float(count - 1)
        let half = count / 2
        return (0..<count).map { i in
            i < half ? first.addingProduct(step, Float(i)) : last.addingProduct(-step, Float(count - i - 1))
        }
    }

    /// σ at the final step when `final_sigmas_type` is "sigma_min": `((1 - ᾱ_0) / ᾱ_0) ** 0.5`.
    var sigmaMin: Float { sigmas[0] }
}

/// numpy routines the schedulers' `set_timesteps` use, with numpy's arithmetic (float64).
enum NumPy {
    /// `np.linspace(start, stop, count)` (endpoint included; a single point is `start`).
    static func linspace(_ start: Double, _ stop: Double, _ count: Int) -> [Double] {
        guard count > 0 else { return [] }
        guard count > 1 else { return [start] }
        let step = (stop - start) / Double(count - 1)
        var values = (0..<count).map { Double($0) * step + start }
        values[count - 1] = stop
        return values
    }

    /// `np.arange(start, stop, step)` for floats: length `ceil((stop - start) / step)`, filled as numpy's
    /// `DOUBLE_fill` does (`start + i * ((start + step) - start)`).
    static func arange(_ start: Double, _ stop: Double, _ step: Double) -> [Double] {
        let length = Int(((stop - start) / step).rounded(.up))
        guard length > 0 else { return [] }
        let delta = (start + step) - start
        return (0..<length).map { $0 == 0 ? start : start + Double($0) * delta }
    }

    /// `np.round` (half to even).
    static func round(_ value: Double) -> Double { value.rounded(.toNearestOrEven) }

    /// `np.interp(x, np.arange(len(values)), values)`.
    static func interpolate(_ x: Double, _ values: [Float]) -> Double {
        let last = values.count - 1
        if x.isNaN { return x }
        if x <= 0 { return Double(values[0]) }
        if x >= Double(last) { return Double(values[last]) }
        let j = Int(x.rounded(.down))
        if Double(j) == x { return Double(values[j]) }
        let slope = (Double(values[j + 1]) - Double(values[j])) / 1.0
        return slope * (x - Double(j)) + Double(values[j])
    }

    /// diffusers' `_sigma_to_t`: the fractional timestep whose log-sigma interpolates to `sigma`
    /// (`logSigmas` is `np.log` of the float32 sigmas, so float32 like diffusers').
    static func sigmaToTimestep(_ sigma: Double, logSigmas: [Float]) -> Double {
        let logSigma = log(max(sigma, 1e-10))
        var low = 0
        for (i, value) in logSigmas.enumerated() where logSigma - Double(value) >= 0 { low = i }
        low = min(low, logSigmas.count - 2)
        let high = low + 1
        let lowValue = logSigmas[low], highValue = logSigmas[high]
        var w = (Double(lowValue) - logSigma) / Double(lowValue - highValue)
        w = min(max(w, 0), 1)
        return (1 - w) * Double(low) + w * Double(high)
    }

    /// diffusers' `_convert_to_karras` (ρ = 7), in float64.
    static func karrasSigmas(sigmaMin: Double, sigmaMax: Double, count: Int) -> [Double] {
        let rho = 7.0
        let minInvRho = pow(sigmaMin, 1 / rho), maxInvRho = pow(sigmaMax, 1 / rho)
        return linspace(0, 1, count).map { pow(maxInvRho + $0 * (minInvRho - maxInvRho), rho) }
    }
}

/// Element-wise float32 arithmetic on tensors in the order torch evaluates the schedulers' expressions.
enum Elementwise {
    static func map(_ a: Tensor, _ body: (Float) -> Float) -> Tensor {
        Tensor(shape: a.shape, scalars: a.scalars.map(body))
    }

    static func zip(_ a: Tensor, _ b: Tensor, _ body: (Float, Float) -> Float) -> Tensor {
        precondition(a.shape == b.shape, "scheduler tensors must have equal shapes, got \(a.shape) and \(b.shape)")
        var out = [Float](repeating: 0, count: a.count)
        a.scalars.withUnsafeBufferPointer { pa in
            b.scalars.withUnsafeBufferPointer { pb in
                for i in 0..<out.count { out[i] = body(pa[i], pb[i]) }
            }
        }
        return Tensor(shape: a.shape, scalars: out)
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// diffusers' `Timesteps` (`get_timestep_embedding`): sinusoidal features of scalar timesteps.
///
/// For `half = channels / 2` frequencies `f_i = exp(−ln(10000) · i / (half − downscaleFreqShift))`,
/// the embedding of `t` is `[sin(t·f), cos(t·f)]`, or `[cos, sin]` with `flipSinToCos`; odd widths get a
/// zero column. Computed in Float32 step by step as diffusers does, so the (large) arguments `t·f` round
/// the same way.
public struct SinusoidalTimestepProjection: Sendable {
    public let channels: Int
    public let flipSinToCos: Bool
    public let downscaleFreqShift: Float

    public init(channels: Int, flipSinToCos: Bool, downscaleFreqShift: Float) {
        self.channels = channels
        self.flipSinToCos = flipSinToCos
        self.downscaleFreqShift = downscaleFreqShift
    }

    /// [timesteps.count, channels].
    public func callAsFunction(_ timesteps: [Float]) -> Tensor {
        let half = channels / 2
        let logPeriod = Float(-log(10000.0))
        let frequencies = (0..<half).map { expf(logPeriod * Float($0) / (Float(half) - downscaleFreqShift)) }
        return Tensor(shape: [timesteps.count, channels]) { out in
            for (row, t) in timesteps.enumerated() {
                let base = row * channels
                for i in 0..<half {
                    let angle = t * frequencies[i]
                    let (s, c) = (sinf(angle), cosf(angle))
                    out[base + i] = flipSinToCos ? c : s
                    out[base + half + i] = flipSinToCos ? s : c
                }
                if channels % 2 == 1 { out[base + channels - 1] = 0 }
            }
        }
    }
}

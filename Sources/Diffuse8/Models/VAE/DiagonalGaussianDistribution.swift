#if canImport(Glibc)
import Glibc
#endif

/// diffusers' `DiagonalGaussianDistribution`: the latent distribution the VAE encoder predicts.
public struct DiagonalGaussianDistribution: Sendable {
    /// [N, latent_channels, h, w].
    public var mean: Tensor
    /// log σ², clamped to [-30, 20] as diffusers does.
    public var logVariance: Tensor

    /// The most likely latent: the mean (`latent_dist.mode()`).
    public func mode() -> Tensor { mean }

    /// σ = exp(½ · logVariance).
    public var standardDeviation: Tensor { CPUKernels.map(logVariance) { expf(0.5 * $0) } }

    /// mean + σ · noise, `latent_dist.sample(generator)` given the caller's standard-normal draw
    /// (shape of `mean`), so any generator can supply it.
    public func sample(noise: Tensor) -> Tensor {
        precondition(noise.shape == mean.shape, "sample: noise \(noise.shape) must have the latent shape \(mean.shape)")
        return Tensor(shape: mean.shape) { out in
            for i in 0..<out.count { out[i] = mean.scalars[i] + expf(0.5 * logVariance.scalars[i]) * noise.scalars[i] }
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Image-to-image starting latents with the semantics of diffusers' `StableDiffusionImg2ImgPipeline`:
///
/// - the run's timesteps are cut by `strength`: the first `steps − min(⌊steps·strength⌋, steps)` are skipped
///   (`get_timesteps`; the scheduler begins at that index);
/// - the init image (pixels in [-1, 1]) is encoded by the VAE and a latent is *sampled* from the posterior
///   (mean + std·ε, ε the generator's first draw), times `scaling_factor`;
/// - the scheduler's `add_noise` at the first kept step mixes in noise from the generator's second draw
///   (Euler: x + σ·n; DDIM: √ᾱ·x + √(1−ᾱ)·n; DPM++: α_t·x + σ_t·n).
enum ImageToImage {
    /// The index of the first step that runs, for `steps` steps at `strength` (throws when none would run).
    static func startIndex(steps: Int, strength: Float) throws -> Int {
        guard (0...1).contains(strength) else {
            throw PipelineError("strength \(strength) is outside [0, 1] (0 keeps the init image, 1 replaces it)")
        }
        let kept = min(Int(Float(steps) * strength), steps)  // int() truncates, as in diffusers
        guard kept >= 1 else {
            throw PipelineError("strength \(strength) × \(steps) steps leaves no denoising step; raise --strength or --steps")
        }
        return steps - kept
    }

    /// The noised starting latents for `image` [1, 3, H, W] in [-1, 1].
    static func startLatents(image: Tensor, vae: AutoencoderKL, scheduler: any Scheduler, startIndex: Int,
                             generator: inout TorchGenerator) throws -> Tensor {
        let moments = try vae.encodeMoments(CPUBackend.shared, image)  // [1, 2C, h, w]: mean, log-variance
        let channels = moments.shape[1] / 2
        let half = moments.count / 2
        var latentShape = moments.shape
        latentShape[1] = channels
        let epsilon = generator.randn(latentShape)
        let scaling = vae.configuration.scalingFactor
        let latents = Tensor(shape: latentShape) { out in
            for i in 0..<half {
                let logVariance = min(max(moments.scalars[half + i], -30), 20)
                let std = expf(0.5 * logVariance)
                out[i] = (moments.scalars[i] + std * epsilon.scalars[i]) * scaling
            }
        }
        let noise = generator.randn(latentShape)
        let (a, b) = try noiseMix(scheduler, stepIndex: startIndex)
        return Tensor(shape: latentShape) { out in
            for i in 0..<half { out[i] = a * latents.scalars[i] + b * noise.scalars[i] }
        }
    }

    /// (a, b) of the scheduler's `add_noise(x, n, t) = a·x + b·n` at `stepIndex`.
    static func noiseMix(_ scheduler: any Scheduler, stepIndex: Int) throws -> (Float, Float) {
        switch scheduler {
        case let s as EulerDiscreteScheduler: return (1, s.sigmas[stepIndex])
        case let s as EulerAncestralDiscreteScheduler: return (1, s.sigmas[stepIndex])
        case let s as DDIMScheduler:
            let alpha = s.alphasCumprod[Int(s.timesteps[stepIndex])]
            return (alpha.squareRoot(), (1 - alpha).squareRoot())
        case let s as DPMSolverMultistepScheduler:
            let (alpha, sigma) = DPMSolverMultistepScheduler.alphaSigma(s.sigmas[stepIndex])
            return (alpha, sigma)
        default:
            throw PipelineError("image-to-image is not available with the \(type(of: scheduler)) scheduler")
        }
    }
}


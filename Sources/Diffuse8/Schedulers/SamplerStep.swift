/// One scheduler step as numbers, so that a backend can run a whole sampling loop without the host (the CUDA
/// sampling loop). With ε the guided model output, x the FP32 latents, x0′ the previous step's x0 and n the step's
/// noise (drawn in advance from the same generator, in the order the host loop draws it):
///
///     model input = x / inputDivisor
///     x0          = originalFromSample · x + originalFromOutput · ε
///     x_next      = sampleScale · x + originalScale · x0 + clippedOriginalScale · clamp(x0, ±clipRange)
///                   + previousOriginalScale · x0′ + noiseScale · n
///
/// Every scheduler here is linear in x, ε and x0′ once its per-step constants are known, except for DDIM's
/// `clip_sample`, an elementwise clamp of x0 that the clipped term carries (diffusers clips x0 but keeps the
/// unclipped ε for the direction term, so both x0 and its clamp appear). The host loop (`Scheduler.step`) stays the reference; these coefficients agree with it up to FP32
/// rounding (the order of operations differs).
public struct SamplerStep: Sendable, Equatable {
    public var inputDivisor: Float
    public var originalFromSample: Float
    public var originalFromOutput: Float
    public var sampleScale: Float
    public var originalScale: Float
    public var previousOriginalScale: Float = 0
    public var noiseScale: Float = 0
    /// Weight of x0 clamped to [−clipRange, clipRange] (DDIM with `clip_sample`); 0 when nothing is clipped.
    public var clippedOriginalScale: Float = 0
    public var clipRange: Float = .infinity

    /// x0 from the sample and the model output, for the three prediction types, given the step's α (signal scale)
    /// and σ (noise scale) with x = α·x0 + σ·ε.
    static func original(_ type: PredictionType, alpha: Float, sigma: Float) -> (fromSample: Float, fromOutput: Float) {
        switch type {
        case .epsilon: return (1 / alpha, -sigma / alpha)
        case .vPrediction: return (alpha, -sigma)
        case .sample: return (0, 1)
        }
    }

    /// The same update on host tensors, for testing the coefficients against `Scheduler.step` (the device loop's
    /// reference): returns (x_next, x0).
    public func apply(sample x: Tensor, output e: Tensor, previousOriginal: Tensor?, noise: Tensor?) -> (next: Tensor, original: Tensor) {
        let x0 = Elementwise.zip(x, e) { s, o in originalFromSample * s + originalFromOutput * o }
        var next = Elementwise.zip(x, x0) { s, o in sampleScale * s + originalScale * o }
        if clippedOriginalScale != 0 {
            next = Elementwise.zip(next, x0) { v, o in v + clippedOriginalScale * min(max(o, -clipRange), clipRange) }
        }
        if let previousOriginal, previousOriginalScale != 0 {
            next = Elementwise.zip(next, previousOriginal) { v, p in v + previousOriginalScale * p }
        }
        if let noise, noiseScale != 0 { next = Elementwise.zip(next, noise) { v, n in v + noiseScale * n } }
        return (next, x0)
    }
}

extension Scheduler {
    /// Every step of this run as coefficients, or nil when a step is not linear (the host loop then runs it).
    public func samplerSteps() -> [SamplerStep]? { nil }
}

extension EulerDiscreteScheduler {
    /// x0 in σ-space (x = x0 + σ·ε, model input x/√(σ²+1)); x_next = x + ((x − x0)/σ)·(σ_next − σ).
    public func samplerSteps() -> [SamplerStep]? {
        (0..<timesteps.count).map { i in
            let sigma = sigmas[i], dt = sigmas[i + 1] - sigma
            let scale = (sigma * sigma + 1).squareRoot()
            // In σ-space α = 1 for ε and sample; v-prediction uses the VP form (α = 1/√(σ²+1), σ·α) on x/√(σ²+1).
            let x0: (fromSample: Float, fromOutput: Float) = predictionType == .vPrediction
                ? (1 / (sigma * sigma + 1), -sigma / scale) : SamplerStep.original(predictionType, alpha: 1, sigma: sigma)
            return SamplerStep(inputDivisor: scale, originalFromSample: x0.fromSample, originalFromOutput: x0.fromOutput,
                               sampleScale: 1 + dt / sigma, originalScale: -dt / sigma)
        }
    }
}

extension EulerAncestralDiscreteScheduler {
    /// The Euler step to σ_down plus σ_up · noise.
    public func samplerSteps() -> [SamplerStep]? {
        (0..<timesteps.count).map { i in
            let sigma = sigmas[i], to = sigmas[i + 1]
            let sigmaUp = ((to * to) * (sigma * sigma - to * to) / (sigma * sigma)).squareRoot()
            let dt = (to * to - sigmaUp * sigmaUp).squareRoot() - sigma
            let scale = (sigma * sigma + 1).squareRoot()
            let x0: (fromSample: Float, fromOutput: Float) = predictionType == .vPrediction
                ? (1 / (sigma * sigma + 1), -sigma / scale) : SamplerStep.original(predictionType, alpha: 1, sigma: sigma)
            return SamplerStep(inputDivisor: scale, originalFromSample: x0.fromSample, originalFromOutput: x0.fromOutput,
                               sampleScale: 1 + dt / sigma, originalScale: -dt / sigma, noiseScale: sigmaUp)
        }
    }
}

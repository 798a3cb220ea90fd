/// Matches diffusers' `DDIMScheduler` (0.42.1) built with `from_config(config)` and `set_timesteps(steps)`;
/// A1111's "DDIM". `eta` is `step`'s `eta` (the SD pipelines' default is 0: deterministic); with `eta > 0` each
/// step draws `randn(sample.shape)` from the generator, as diffusers does.
///
/// Config keys read (class defaults in brackets): `num_train_timesteps` [1000], `beta_start` [0.0001],
/// `beta_end` [0.02], `beta_schedule` ["linear"; "linear" or "scaled_linear"], `clip_sample` [true],
/// `clip_sample_range` [1.0], `set_alpha_to_one` [true], `steps_offset` [0], `prediction_type` ["epsilon";
/// also "v_prediction", "sample"], `timestep_spacing` ["leading"; "linspace", "trailing"].
/// Note the class defaults: a config without `clip_sample` (such as a PNDM config) clips x0 to [-1, 1], exactly as
/// diffusers does. Rejected with an error: `trained_betas`, `rescale_betas_zero_snr`, `thresholding`.
public struct DDIMScheduler: Scheduler {
    public let timesteps: [Double]
    public let initNoiseSigma: Float = 1
    public let predictionType: PredictionType
    public let eta: Float

    let alphasCumprod: [Float]
    private let finalAlphaCumprod: Float
    private let stepRatio: Int
    private let clipRange: Float?

    public init(config: JSONValue, steps: Int, eta: Float = 0) throws {
        let reader = try ComponentConfigReader(scheduler: config, className: "DDIMScheduler")
        let schedule = try reader.noiseSchedule()
        guard steps >= 1 && steps <= schedule.trainTimesteps else {
            throw SchedulerError("DDIMScheduler: the number of steps must be between 1 and num_train_timesteps (\(schedule.trainTimesteps)), got \(steps)")
        }
        predictionType = try reader.predictionType(supported: ["epsilon", "v_prediction", "sample"])
        try reader.requireOff("thresholding")
        let clip = try reader.bool("clip_sample", default: true)
        clipRange = clip ? Float(try reader.double("clip_sample_range", default: 1.0, in: 0...1e6, nonZero: true)) : nil
        let alphaToOne = try reader.bool("set_alpha_to_one", default: true)
        let spacing = try reader.choice("timestep_spacing", default: "leading", supported: ["leading", "trailing", "linspace"])
        let stepsOffset = try reader.stepsOffset(trainTimesteps: schedule.trainTimesteps)
        let trainTimesteps = schedule.trainTimesteps
        switch spacing {
        case "linspace":
            timesteps = NumPy.linspace(0, Double(trainTimesteps - 1), steps).map(NumPy.round).reversed()
        case "leading":
            let ratio = trainTimesteps / steps
            timesteps = (0..<steps).reversed().map { Double($0 * ratio + stepsOffset) }
        default:
            timesteps = NumPy.arange(Double(trainTimesteps), 0, -Double(trainTimesteps) / Double(steps)).map { NumPy.round($0) - 1 }
        }
        // Each timestep indexes alphas_cumprod: "leading" spacing plus steps_offset can pass the last one.
        if let bad = timesteps.first(where: { !(0..<Double(trainTimesteps)).contains($0) }) {
            throw reader.error("steps_offset", "with \(steps) steps and \"\(spacing)\" spacing gives timestep \(bad), outside 0..<\(trainTimesteps) (num_train_timesteps); lower steps_offset or the number of steps")
        }
        alphasCumprod = schedule.alphasCumprod
        finalAlphaCumprod = alphaToOne ? 1 : schedule.alphasCumprod[0]
        // diffusers steps back by num_train_timesteps // steps whatever the spacing.
        stepRatio = trainTimesteps / steps
        self.eta = eta
    }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor {
        let timestep = Int(timesteps[stepIndex])
        let previous = timestep - stepRatio
        let alphaProduct = alphasCumprod[timestep]
        let alphaProductPrevious = previous >= 0 ? alphasCumprod[previous] : finalAlphaCumprod
        let betaProduct = 1 - alphaProduct
        let sqrtAlpha = alphaProduct.squareRoot(), sqrtBeta = betaProduct.squareRoot()

        var original: Tensor
        var epsilon: Tensor
        switch predictionType {
        case .epsilon:
            original = Elementwise.zip(sample, modelOutput) { s, e in (s - sqrtBeta * e) / sqrtAlpha }
            epsilon = modelOutput
        case .sample:
            original = modelOutput
            epsilon = Elementwise.zip(sample, modelOutput) { s, x0 in (s - sqrtAlpha * x0) / sqrtBeta }
        case .vPrediction:
            original = Elementwise.zip(sample, modelOutput) { s, v in sqrtAlpha * s - sqrtBeta * v }
            epsilon = Elementwise.zip(sample, modelOutput) { s, v in sqrtAlpha * v + sqrtBeta * s }
        }
        if let range = clipRange {
            original = Elementwise.map(original) { min(max($0, -range), range) }
        }
        let betaProductPrevious = 1 - alphaProductPrevious
        let variance = betaProductPrevious / betaProduct * (1 - alphaProduct / alphaProductPrevious)
        let deviation = eta * variance.squareRoot()
        let directionScale = (1 - alphaProductPrevious - deviation * deviation).squareRoot()
        let sqrtAlphaPrevious = alphaProductPrevious.squareRoot()
        var previousSample = Elementwise.zip(original, epsilon) { x0, e in sqrtAlphaPrevious * x0 + directionScale * e }
        if eta > 0 {
            let noise = generator.randn(modelOutput.shape)
            previousSample = Elementwise.zip(previousSample, noise) { x, n in x + deviation * n }
        }
        return previousSample
    }
}

extension DDIMScheduler {
    /// x_next = √ᾱ_prev · x0 + dir · ε + deviation · n with ε = (x − √ᾱ · x0)/√(1 − ᾱ) (for every prediction type: ε is
    /// derived before clipping); with `clip_sample` the √ᾱ_prev term takes the clamped x0 instead.
    public func samplerSteps() -> [SamplerStep]? {
        (0..<timesteps.count).map { i in
            let timestep = Int(timesteps[i]), previous = timestep - stepRatio
            let alphaProduct = alphasCumprod[timestep]
            let alphaProductPrevious = previous >= 0 ? alphasCumprod[previous] : finalAlphaCumprod
            let betaProduct = 1 - alphaProduct
            let sqrtAlpha = alphaProduct.squareRoot(), sqrtBeta = betaProduct.squareRoot()
            let variance = (1 - alphaProductPrevious) / betaProduct * (1 - alphaProduct / alphaProductPrevious)
            let deviation = eta * variance.squareRoot()
            let direction = (1 - alphaProductPrevious - deviation * deviation).squareRoot()
            let x0 = SamplerStep.original(predictionType, alpha: sqrtAlpha, sigma: sqrtBeta)
            let signal = alphaProductPrevious.squareRoot(), fromOriginal = -direction * sqrtAlpha / sqrtBeta
            var step = SamplerStep(inputDivisor: 1, originalFromSample: x0.fromSample, originalFromOutput: x0.fromOutput,
                                   sampleScale: direction / sqrtBeta, originalScale: clipRange == nil ? signal + fromOriginal : fromOriginal,
                                   noiseScale: eta > 0 ? deviation : 0)
            if let clipRange {
                step.clippedOriginalScale = signal
                step.clipRange = clipRange
            }
            return step
        }
    }
}

/// Matches diffusers' `EulerAncestralDiscreteScheduler` (0.42.1) built with `from_config(config)` and
/// `set_timesteps(steps)`; A1111's "Euler a". Each step draws `randn(sample.shape)` from the generator after the
/// deterministic update, as diffusers does with the pipeline's generator (which drew the initial latents first).
///
/// Config keys read (class defaults in brackets): `num_train_timesteps` [1000], `beta_start` [0.0001],
/// `beta_end` [0.02], `beta_schedule` ["linear"; "linear" or "scaled_linear"], `prediction_type` ["epsilon";
/// also "v_prediction"], `timestep_spacing` ["linspace"; "leading", "trailing"], `steps_offset` [0].
/// Rejected with an error: `trained_betas`, `rescale_betas_zero_snr`, `prediction_type: "sample"` (diffusers
/// raises too). Other keys (`use_karras_sigmas`, ...) are not parameters of this class and are ignored, as in
/// diffusers.
public struct EulerAncestralDiscreteScheduler: Scheduler {
    public let timesteps: [Double]
    /// σ of each step plus the final 0 (`steps + 1` values).
    public let sigmas: [Float]
    public let initNoiseSigma: Float
    public let predictionType: PredictionType

    public init(config: JSONValue, steps: Int) throws {
        let reader = try ComponentConfigReader(scheduler: config, className: "EulerAncestralDiscreteScheduler")
        guard steps >= 1 else { throw SchedulerError("EulerAncestralDiscreteScheduler: the number of steps must be at least 1, got \(steps)") }
        let schedule = try reader.noiseSchedule()
        predictionType = try reader.predictionType(supported: ["epsilon", "v_prediction"])
        let spacing = try reader.choice("timestep_spacing", default: "linspace", supported: ["linspace", "leading", "trailing"])
        let stepsOffset = try reader.stepsOffset(trainTimesteps: schedule.trainTimesteps)
        let stepTimesteps = EulerDiscreteScheduler.spacedTimesteps(
            spacing: spacing, trainTimesteps: schedule.trainTimesteps, steps: steps, stepsOffset: stepsOffset)
        sigmas = stepTimesteps.map { Float(NumPy.interpolate(Double($0), schedule.sigmas)) } + [0]
        timesteps = stepTimesteps.map { Double($0) }
        initNoiseSigma = EulerDiscreteScheduler.initNoiseSigma(sigmas: sigmas, spacing: spacing)
    }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor {
        EulerDiscreteScheduler.scaledInput(sample, sigma: sigmas[stepIndex])
    }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor {
        let sigma = sigmas[stepIndex]
        let original = EulerDiscreteScheduler.predictOriginal(modelOutput: modelOutput, sample: sample, sigma: sigma,
                                                             type: predictionType)
        let sigmaFrom = sigma, sigmaTo = sigmas[stepIndex + 1]
        let sigmaUp = ((sigmaTo * sigmaTo) * (sigmaFrom * sigmaFrom - sigmaTo * sigmaTo) / (sigmaFrom * sigmaFrom)).squareRoot()
        let sigmaDown = (sigmaTo * sigmaTo - sigmaUp * sigmaUp).squareRoot()
        let dt = sigmaDown - sigma
        let deterministic = Elementwise.zip(sample, original) { s, x0 in s + ((s - x0) / sigma) * dt }
        let noise = generator.randn(modelOutput.shape)
        return Elementwise.zip(deterministic, noise) { x, n in x + n * sigmaUp }
    }
}

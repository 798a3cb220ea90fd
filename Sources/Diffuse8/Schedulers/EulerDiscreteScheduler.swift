#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Matches diffusers' `EulerDiscreteScheduler` (0.42.1) built with `from_config(config)` and
/// `set_timesteps(steps)`; A1111's "Euler" (and "Euler Karras" with `use_karras_sigmas`).
///
/// Config keys read (class defaults in brackets): `num_train_timesteps` [1000], `beta_start` [0.0001],
/// `beta_end` [0.02], `beta_schedule` ["linear"; "linear" or "scaled_linear"], `prediction_type` ["epsilon";
/// also "v_prediction", "sample"], `interpolation_type` ["linear"], `use_karras_sigmas` [false], `sigma_min`,
/// `sigma_max` [null], `timestep_spacing` ["linspace"; "leading", "trailing"], `steps_offset` [0],
/// `final_sigmas_type` ["zero"; "sigma_min"], `timestep_type` ["discrete"].
/// Rejected with an error: `trained_betas`, `rescale_betas_zero_snr`, `use_exponential_sigmas`, `use_beta_sigmas`,
/// `interpolation_type: "log_linear"`, `timestep_type: "continuous"` with v-prediction, `beta_schedule` other
/// than the two above. `step` uses diffusers' defaults `s_churn = 0` (no added noise).
public struct EulerDiscreteScheduler: Scheduler {
    public let timesteps: [Double]
    /// σ of each step plus the final σ (`steps + 1` values).
    public let sigmas: [Float]
    public let initNoiseSigma: Float
    public let predictionType: PredictionType

    public init(config: JSONValue, steps: Int) throws {
        let reader = try ComponentConfigReader(scheduler: config, className: "EulerDiscreteScheduler")
        guard steps >= 1 else { throw SchedulerError("EulerDiscreteScheduler: the number of steps must be at least 1, got \(steps)") }
        let schedule = try reader.noiseSchedule()
        predictionType = try reader.predictionType(supported: ["epsilon", "v_prediction", "sample", "original_sample"])
        _ = try reader.choice("interpolation_type", default: "linear", supported: ["linear"])
        try reader.requireOff("use_exponential_sigmas")
        try reader.requireOff("use_beta_sigmas")
        let useKarras = try reader.bool("use_karras_sigmas", default: false)
        let timestepType = try reader.choice("timestep_type", default: "discrete", supported: ["discrete", "continuous"])
        if timestepType == "continuous" && predictionType == .vPrediction {
            throw reader.error("timestep_type", "not supported with v_prediction; use \"discrete\"")
        }
        let spacing = try reader.choice("timestep_spacing", default: "linspace", supported: ["linspace", "leading", "trailing"])
        let finalSigmas = try reader.choice("final_sigmas_type", default: "zero", supported: ["zero", "sigma_min"])
        let stepsOffset = try reader.stepsOffset(trainTimesteps: schedule.trainTimesteps)

        var stepTimesteps = Self.spacedTimesteps(spacing: spacing, trainTimesteps: schedule.trainTimesteps, steps: steps,
                                                 stepsOffset: stepsOffset)
        var stepSigmas = stepTimesteps.map { NumPy.interpolate(Double($0), schedule.sigmas) }
        if useKarras {
            let sigmaMin = reader.isPresent("sigma_min") ? try reader.double("sigma_min", default: 0, in: 0...1e6, nonZero: true)
                                                         : stepSigmas[stepSigmas.count - 1]
            let sigmaMax = reader.isPresent("sigma_max") ? try reader.double("sigma_max", default: 0, in: 0...1e6, nonZero: true)
                                                         : stepSigmas[0]
            stepSigmas = NumPy.karrasSigmas(sigmaMin: sigmaMin, sigmaMax: sigmaMax, count: steps)
            let logSigmas = schedule.sigmas.map { logf($0) }
            stepTimesteps = stepSigmas.map { Float(NumPy.sigmaToTimestep($0, logSigmas: logSigmas)) }
        }
        let last: Float = finalSigmas == "zero" ? 0 : schedule.sigmaMin
        sigmas = stepSigmas.map { Float($0) } + [last]
        timesteps = stepTimesteps.map { Double($0) }
        initNoiseSigma = Self.initNoiseSigma(sigmas: sigmas, spacing: spacing)
    }

    /// The float32 timesteps Euler-type schedulers space for `steps` (before any Karras conversion).
    static func spacedTimesteps(spacing: String, trainTimesteps: Int, steps: Int, stepsOffset: Int) -> [Float] {
        switch spacing {
        case "linspace":
            return NumPy.linspace(0, Double(trainTimesteps - 1), steps).reversed().map { Float($0) }
        case "leading":
            let ratio = trainTimesteps / steps
            return (0..<steps).reversed().map { Float($0 * ratio) + Float(stepsOffset) }
        default:  // trailing
            let ratio = Double(trainTimesteps) / Double(steps)
            return NumPy.arange(Double(trainTimesteps), 0, -ratio).map { Float(NumPy.round($0)) - 1 }
        }
    }

    /// `init_noise_sigma`: the largest σ for "linspace"/"trailing" spacing, else `(σ_max² + 1) ** 0.5`.
    static func initNoiseSigma(sigmas: [Float], spacing: String) -> Float {
        let maxSigma = sigmas.max() ?? 1
        return spacing == "linspace" || spacing == "trailing" ? maxSigma : (maxSigma * maxSigma + 1).squareRoot()
    }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor {
        Self.scaledInput(sample, sigma: sigmas[stepIndex])
    }

    /// `scale_model_input` of Euler-type schedulers: sample / (σ² + 1) ** 0.5.
    static func scaledInput(_ sample: Tensor, sigma: Float) -> Tensor {
        let divisor = (sigma * sigma + 1).squareRoot()
        return Elementwise.map(sample) { $0 / divisor }
    }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor {
        let sigma = sigmas[stepIndex]
        let original = Self.predictOriginal(modelOutput: modelOutput, sample: sample, sigma: sigma, type: predictionType)
        let dt = sigmas[stepIndex + 1] - sigma
        // derivative = (sample - x0) / σ; prev = sample + derivative * dt
        return Elementwise.zip(sample, original) { s, x0 in s + ((s - x0) / sigma) * dt }
    }

    /// The denoised estimate x0 of Euler-type schedulers for each prediction type.
    static func predictOriginal(modelOutput: Tensor, sample: Tensor, sigma: Float, type: PredictionType) -> Tensor {
        switch type {
        case .epsilon:
            return Elementwise.zip(sample, modelOutput) { s, e in s - sigma * e }
        case .vPrediction:
            let outputScale = -sigma / (sigma * sigma + 1).squareRoot()
            let sampleDivisor = sigma * sigma + 1
            return Elementwise.zip(sample, modelOutput) { s, v in v * outputScale + s / sampleDivisor }
        case .sample:
            return modelOutput
        }
    }
}

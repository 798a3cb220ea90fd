#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Matches diffusers' `DPMSolverMultistepScheduler` (0.42.1) built with `from_config(config)` and
/// `set_timesteps(steps)`, for `algorithm_type` "dpmsolver++" with `solver_order` 1 or 2: A1111's "DPM++ 2M"
/// (and "DPM++ 2M Karras" with `use_karras_sigmas`). Keeps the previous step's x0 prediction, so steps must be
/// taken in order from index 0.
///
/// Config keys read (class defaults in brackets): `num_train_timesteps` [1000], `beta_start` [0.0001],
/// `beta_end` [0.02], `beta_schedule` ["linear"; "linear" or "scaled_linear"], `solver_order` [2],
/// `prediction_type` ["epsilon"; also "v_prediction", "sample"], `algorithm_type` ["dpmsolver++"; "deis" is read
/// as "dpmsolver++" like diffusers], `solver_type` ["midpoint"; "heun"; "logrho", "bh1", "bh2" read as midpoint],
/// `lower_order_final` [true], `euler_at_final` [false], `use_karras_sigmas` [false], `final_sigmas_type`
/// ["zero"; "sigma_min"], `lambda_min_clipped` [-inf], `timestep_spacing` ["linspace"; "leading", "trailing"],
/// `steps_offset` [0].
/// Rejected with an error: `trained_betas`, `rescale_betas_zero_snr`, `thresholding`, `variance_type`,
/// `use_exponential_sigmas`, `use_beta_sigmas`, `use_lu_lambdas`, `use_flow_sigmas`, `use_dynamic_shifting`,
/// `solver_order` 3, `algorithm_type` "dpmsolver", "sde-dpmsolver", "sde-dpmsolver++".
public struct DPMSolverMultistepScheduler: Scheduler {
    public let timesteps: [Double]
    /// σ of each step plus the final σ (`timesteps.count + 1` values).
    public let sigmas: [Float]
    public let initNoiseSigma: Float = 1
    public let predictionType: PredictionType
    public let solverOrder: Int
    public let useKarrasSigmas: Bool

    private let heun: Bool
    private let lowerOrderFinal: Bool
    private let eulerAtFinal: Bool
    private let finalSigmaIsZero: Bool
    /// x0 predictions of the last `solverOrder` steps, oldest first.
    private var modelOutputs: [Tensor?]
    private var lowerOrderCount = 0

    public init(config: JSONValue, steps: Int) throws {
        let reader = try ComponentConfigReader(scheduler: config, className: "DPMSolverMultistepScheduler")
        guard steps >= 1 else { throw SchedulerError("DPMSolverMultistepScheduler: the number of steps must be at least 1, got \(steps)") }
        let schedule = try reader.noiseSchedule()
        predictionType = try reader.predictionType(supported: ["epsilon", "v_prediction", "sample"])
        solverOrder = try reader.int("solver_order", default: 2)
        guard solverOrder == 1 || solverOrder == 2 else {
            throw reader.error("solver_order", "not supported; use 1 or 2")
        }
        _ = try reader.choice("algorithm_type", default: "dpmsolver++", supported: ["dpmsolver++", "deis"])
        let solverType = try reader.choice("solver_type", default: "midpoint", supported: ["midpoint", "heun", "logrho", "bh1", "bh2"])
        heun = solverType == "heun"
        try reader.requireOff("thresholding")
        try reader.requireNull("variance_type")
        for key in ["use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting"] {
            try reader.requireOff(key)
        }
        lowerOrderFinal = try reader.bool("lower_order_final", default: true)
        eulerAtFinal = try reader.bool("euler_at_final", default: false)
        useKarrasSigmas = try reader.bool("use_karras_sigmas", default: false)
        finalSigmaIsZero = try reader.choice("final_sigmas_type", default: "zero", supported: ["zero", "sigma_min"]) == "zero"
        let spacing = try reader.choice("timestep_spacing", default: "linspace", supported: ["linspace", "leading", "trailing"])
        let stepsOffset = try reader.stepsOffset(trainTimesteps: schedule.trainTimesteps)
        let lambdaMinClipped = try reader.double("lambda_min_clipped", default: -.infinity)

        let trainTimesteps = schedule.trainTimesteps
        // last_timestep = num_train_timesteps - searchsorted(flip(λ_t), lambda_min_clipped)
        var clippedCount = 0
        if lambdaMinClipped > -.infinity {
            let lambdas = schedule.alphasCumprod.map { logf($0.squareRoot()) - logf((1 - $0).squareRoot()) }
            clippedCount = lambdas.reversed().firstIndex { $0 >= Float(lambdaMinClipped) } ?? trainTimesteps
        }
        let lastTimestep = trainTimesteps - clippedCount
        var stepTimesteps: [Double]
        switch spacing {
        case "linspace":
            stepTimesteps = Array(NumPy.linspace(0, Double(lastTimestep - 1), steps + 1).map(NumPy.round).reversed().dropLast())
        case "leading":
            let ratio = lastTimestep / (steps + 1)
            stepTimesteps = (1...steps).reversed().map { Double($0 * ratio + stepsOffset) }
        default:
            let ratio = Double(trainTimesteps) / Double(steps)
            stepTimesteps = NumPy.arange(Double(lastTimestep), 0, -ratio).map { NumPy.round($0) - 1 }
        }
        var stepSigmas: [Double]
        if useKarrasSigmas {
            stepSigmas = NumPy.karrasSigmas(sigmaMin: Double(schedule.sigmas[0]), sigmaMax: Double(schedule.sigmas[trainTimesteps - 1]),
                                            count: steps)
            let logSigmas = schedule.sigmas.map { logf($0) }
            stepTimesteps = stepSigmas.map { NumPy.round(NumPy.sigmaToTimestep($0, logSigmas: logSigmas)) }
        } else {
            stepSigmas = stepTimesteps.map { NumPy.interpolate($0, schedule.sigmas) }
        }
        sigmas = stepSigmas.map { Float($0) } + [finalSigmaIsZero ? 0 : schedule.sigmaMin]
        timesteps = stepTimesteps
        modelOutputs = Array(repeating: nil, count: solverOrder)
    }

    public func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor { sample }

    /// diffusers' `_sigma_to_alpha_sigma_t`: α_t = 1 / sqrt(σ² + 1), σ_t = σ α_t.
    static func alphaSigma(_ sigma: Float) -> (alpha: Float, sigma: Float) {
        let alpha = 1 / (sigma * sigma + 1).squareRoot()
        return (alpha, sigma * alpha)
    }

    private static func lambda(_ pair: (alpha: Float, sigma: Float)) -> Float { logf(pair.alpha) - logf(pair.sigma) }

    public mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor {
        let count = timesteps.count
        let useFirstOrderAtEnd = stepIndex == count - 1 && (eulerAtFinal || (lowerOrderFinal && count < 15) || finalSigmaIsZero)
        // (diffusers' `lower_order_second` only matters for solver_order 3, which is not supported.)

        // convert_model_output: the x0 prediction.
        let current = Self.alphaSigma(sigmas[stepIndex])
        let original: Tensor
        switch predictionType {
        case .epsilon:
            original = Elementwise.zip(sample, modelOutput) { s, e in (s - current.sigma * e) / current.alpha }
        case .vPrediction:
            original = Elementwise.zip(sample, modelOutput) { s, v in current.alpha * s - current.sigma * v }
        case .sample:
            original = modelOutput
        }
        for k in 0..<(solverOrder - 1) { modelOutputs[k] = modelOutputs[k + 1] }
        modelOutputs[solverOrder - 1] = original

        let target = Self.alphaSigma(sigmas[stepIndex + 1])
        let lambdaT = Self.lambda(target), lambdaS0 = Self.lambda(current)
        let h = lambdaT - lambdaS0
        let expMinusHMinusOne = expf(-h) - 1.0
        let sampleScale = target.sigma / current.sigma
        let d0Scale = target.alpha * expMinusHMinusOne
        let result: Tensor
        if solverOrder == 1 || lowerOrderCount < 1 || useFirstOrderAtEnd {
            result = Elementwise.zip(sample, original) { s, x0 in sampleScale * s - d0Scale * x0 }
        } else {
            let previous = modelOutputs[solverOrder - 2]!
            let lambdaS1 = Self.lambda(Self.alphaSigma(sigmas[stepIndex - 1]))
            let h0 = lambdaS0 - lambdaS1
            let r0 = h0 / h
            let d1Factor = 1.0 / r0
            let d1 = Elementwise.zip(original, previous) { m0, m1 in d1Factor * (m0 - m1) }
            let base = Elementwise.zip(sample, original) { s, x0 in sampleScale * s - d0Scale * x0 }
            if heun {
                let d1Scale = target.alpha * (expMinusHMinusOne / h + 1.0)
                result = Elementwise.zip(base, d1) { b, d in b + d1Scale * d }
            } else {
                let d1Scale = 0.5 * (target.alpha * expMinusHMinusOne)
                result = Elementwise.zip(base, d1) { b, d in b - d1Scale * d }
            }
        }
        if lowerOrderCount < solverOrder { lowerOrderCount += 1 }
        return result
    }
}

extension DPMSolverMultistepScheduler {
    /// DPM-Solver++ (2M, midpoint or Heun): x_next = (σ_t/σ_s)·x − α_t(e^−h − 1)·x0 ∓ (α_t factor / r0)·(x0 − x0′),
    /// first order on the first step and where `step` uses it at the end.
    public func samplerSteps() -> [SamplerStep]? {
        let count = timesteps.count
        return (0..<count).map { i in
            let useFirstOrderAtEnd = i == count - 1 && (eulerAtFinal || (lowerOrderFinal && count < 15) || finalSigmaIsZero)
            let current = Self.alphaSigma(sigmas[i]), target = Self.alphaSigma(sigmas[i + 1])
            let lambdaS0 = Self.lambda(current), h = Self.lambda(target) - lambdaS0
            let expMinusHMinusOne = expf(-h) - 1.0
            let x0 = SamplerStep.original(predictionType, alpha: current.alpha, sigma: current.sigma)
            var step = SamplerStep(inputDivisor: 1, originalFromSample: x0.fromSample, originalFromOutput: x0.fromOutput,
                                   sampleScale: target.sigma / current.sigma, originalScale: -(target.alpha * expMinusHMinusOne))
            if !(solverOrder == 1 || i == 0 || useFirstOrderAtEnd) {
                let r0 = (lambdaS0 - Self.lambda(Self.alphaSigma(sigmas[i - 1]))) / h
                // d1 = (x0 − x0′)/r0, added with +d1Scale (Heun) or −d1Scale (midpoint).
                let d1Scale = heun ? target.alpha * (expMinusHMinusOne / h + 1.0) : -(0.5 * (target.alpha * expMinusHMinusOne))
                step.originalScale += d1Scale / r0
                step.previousOriginalScale = -d1Scale / r0
            }
            return step
        }
    }
}

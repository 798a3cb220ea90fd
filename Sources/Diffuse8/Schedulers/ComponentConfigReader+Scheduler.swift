/// A scheduler error other than a configuration key (those are `ComponentConfigurationError`s): an
/// unusable number of steps.
public struct SchedulerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Reading a diffusers `scheduler_config.json` the way `XScheduler.from_config(config)` does: each scheduler asks
/// only for the keys of its own `__init__` (other keys, such as a PNDM config's `skip_prk_steps`, are ignored),
/// and a missing or `null` key takes that class's default. Errors name the class, the key and its value.
extension ComponentConfigReader {
    /// The reader for the diffusers scheduler class `className`.
    init(scheduler config: JSONValue, className: String) throws {
        try self.init(config, source: "\(className) scheduler_config.json")
    }

    /// A string key restricted to `supported` values.
    func choice(_ key: String, default fallback: String, supported: [String]) throws -> String {
        let value = try string(key, default: fallback)
        guard supported.contains(value) else {
            throw error(key, "not supported; use one of \(supported.map { "\"\($0)\"" }.joined(separator: ", "))")
        }
        return value
    }

    /// Rejects a boolean option that changes the math when it is on and is not implemented.
    func requireOff(_ key: String, default fallback: Bool = false) throws {
        if try bool(key, default: fallback) {
            throw error(key, "not supported; set it to false")
        }
    }

    /// Rejects a key whose non-null value is not implemented.
    func requireNull(_ key: String) throws {
        if isPresent(key) {
            throw error(key, "not supported; it must be null or absent")
        }
    }

    /// The training noise schedule from the keys every diffusers scheduler shares.
    func noiseSchedule() throws -> NoiseSchedule {
        try requireNull("trained_betas")
        try requireOff("rescale_betas_zero_snr")
        let count = try int("num_train_timesteps", default: 1000, in: 2...ModelLimits.maximumTrainTimesteps)
        let schedule = try choice("beta_schedule", default: "linear", supported: ["linear", "scaled_linear"])
        // β in (0, 1): every ᾱ_t = Π(1 − β) stays in (0, 1], so σ_t = sqrt((1 − ᾱ)/ᾱ) is finite.
        let betaStart = try double("beta_start", default: 0.0001, in: 0...0.999, nonZero: true)
        let betaEnd = try double("beta_end", default: 0.02, in: 0...0.999, nonZero: true)
        return NoiseSchedule(trainTimesteps: count, betaStart: betaStart, betaEnd: betaEnd, scaledLinear: schedule == "scaled_linear")
    }

    /// `steps_offset`: added to "leading" timesteps, which must stay below `num_train_timesteps`.
    func stepsOffset(trainTimesteps: Int) throws -> Int {
        try int("steps_offset", default: 0, in: 0...(trainTimesteps - 1))
    }

    func predictionType(supported: [String]) throws -> PredictionType {
        let name = try choice("prediction_type", default: "epsilon", supported: supported)
        switch name {
        case "epsilon": return .epsilon
        case "v_prediction": return .vPrediction
        default: return .sample
        }
    }
}

/// What the UNet predicts (`prediction_type`).
public enum PredictionType: String, Sendable {
    case epsilon
    case vPrediction = "v_prediction"
    case sample
}

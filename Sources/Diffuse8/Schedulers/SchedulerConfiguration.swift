/// A scheduler configuration error: names the config key, its value, and what is supported.
public struct SchedulerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Reads a diffusers `scheduler_config.json` the way `XScheduler.from_config(config)` does: each scheduler asks
/// only for the keys of its own `__init__` (other keys, such as a PNDM config's `skip_prk_steps`, are ignored),
/// and a missing or `null` key takes that class's default.
struct SchedulerConfiguration {
    let values: [String: JSONValue]
    /// The diffusers class being built, for error messages.
    let className: String

    init(_ config: JSONValue, className: String) throws {
        guard let object = config.object else {
            throw SchedulerError("\(className): scheduler_config.json must be a JSON object, got \(config)")
        }
        values = object
        self.className = className
    }

    private func present(_ key: String) -> JSONValue? {
        guard let value = values[key], !value.isNull else { return nil }
        return value
    }

    private func typeError(_ key: String, _ value: JSONValue, _ expected: String) -> SchedulerError {
        SchedulerError("\(className): scheduler_config.json key '\(key)' must be \(expected), got \(value)")
    }

    func int(_ key: String, default fallback: Int) throws -> Int {
        guard let value = present(key) else { return fallback }
        guard let number = value.int else { throw typeError(key, value, "an integer") }
        return number
    }

    func double(_ key: String, default fallback: Double) throws -> Double {
        guard let value = present(key) else { return fallback }
        guard let number = value.double else { throw typeError(key, value, "a number") }
        return number
    }

    func optionalDouble(_ key: String) throws -> Double? {
        guard let value = present(key) else { return nil }
        guard let number = value.double else { throw typeError(key, value, "a number or null") }
        return number
    }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard let value = present(key) else { return fallback }
        guard let flag = value.bool else { throw typeError(key, value, "true or false") }
        return flag
    }

    func string(_ key: String, default fallback: String) throws -> String {
        guard let value = present(key) else { return fallback }
        guard let text = value.string else { throw typeError(key, value, "a string") }
        return text
    }

    /// A string key restricted to `supported` values.
    func choice(_ key: String, default fallback: String, supported: [String]) throws -> String {
        let value = try string(key, default: fallback)
        guard supported.contains(value) else {
            throw SchedulerError("\(className): scheduler_config.json key '\(key)' = \"\(value)\" is not supported; "
                                 + "use one of \(supported.map { "\"\($0)\"" }.joined(separator: ", "))")
        }
        return value
    }

    /// Rejects a boolean option that changes the math when it is on and is not implemented.
    func requireOff(_ key: String, default fallback: Bool = false) throws {
        if try bool(key, default: fallback) {
            throw SchedulerError("\(className): scheduler_config.json key '\(key)' = true is not supported; set it to false")
        }
    }

    /// Rejects a key whose non-null value is not implemented.
    func requireNull(_ key: String) throws {
        if let value = present(key) {
            throw SchedulerError("\(className): scheduler_config.json key '\(key)' = \(value) is not supported; it must be null or absent")
        }
    }

    /// The training noise schedule from the keys every diffusers scheduler shares.
    func noiseSchedule() throws -> NoiseSchedule {
        try requireNull("trained_betas")
        try requireOff("rescale_betas_zero_snr")
        let count = try int("num_train_timesteps", default: 1000)
        guard count >= 2 else {
            throw SchedulerError("\(className): scheduler_config.json key 'num_train_timesteps' = \(count) must be at least 2")
        }
        let schedule = try choice("beta_schedule", default: "linear", supported: ["linear", "scaled_linear"])
        return NoiseSchedule(trainTimesteps: count, betaStart: try double("beta_start", default: 0.0001),
                             betaEnd: try double("beta_end", default: 0.02), scaledLinear: schedule == "scaled_linear")
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

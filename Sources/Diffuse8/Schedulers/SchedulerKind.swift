/// The samplers Diffuse8 offers, named as on the command line (`--scheduler euler-a`), with the A1111 sampler
/// name written into PNG metadata and the diffusers class each one is.
public enum SchedulerKind: String, CaseIterable, Sendable {
    case euler
    case eulerAncestral = "euler-a"
    case ddim
    case dpmpp2m = "dpm++2m"
    case dpmpp2mKarras = "dpm++2m-karras"

    /// The sampler name A1111 uses (PNG `parameters` chunk, `/sdapi/v1/txt2img` `sampler_name`).
    public var samplerName: String {
        switch self {
        case .euler: return "Euler"
        case .eulerAncestral: return "Euler a"
        case .ddim: return "DDIM"
        case .dpmpp2m: return "DPM++ 2M"
        case .dpmpp2mKarras: return "DPM++ 2M Karras"
        }
    }

    /// The diffusers scheduler class this kind builds.
    public var diffusersClassName: String {
        switch self {
        case .euler: return "EulerDiscreteScheduler"
        case .eulerAncestral: return "EulerAncestralDiscreteScheduler"
        case .ddim: return "DDIMScheduler"
        case .dpmpp2m, .dpmpp2mKarras: return "DPMSolverMultistepScheduler"
        }
    }

    /// `makeScheduler(kind: self, config:, steps:)`.
    public func makeScheduler(config: JSONValue, steps: Int) throws -> any Scheduler {
        try Diffuse8.makeScheduler(kind: self, config: config, steps: steps)
    }

    /// Parses a command-line value (`euler-a`) or an A1111 sampler name (`Euler a`), ignoring case.
    public init?(argument: String) {
        let lowered = argument.lowercased()
        guard let kind = Self.allCases.first(where: { $0.rawValue == lowered || $0.samplerName.lowercased() == lowered }) else {
            return nil
        }
        self = kind
    }
}

/// Builds the scheduler of `kind` from a model folder's `scheduler_config.json` as
/// `Class.from_config(config)` + `set_timesteps(steps)` would (keys the class does not take are ignored, missing
/// keys take the class's defaults). The DPM++ kinds override `algorithm_type` = "dpmsolver++", `solver_order` = 2
/// and `use_karras_sigmas` (false for `dpmpp2m`, true for `dpmpp2mKarras`), as A1111's samplers are defined.
/// Throws a `ComponentConfigurationError` naming the key for configurations it does not support, a
/// `SchedulerError` for an unusable number of steps.
public func makeScheduler(kind: SchedulerKind, config: JSONValue, steps: Int) throws -> any Scheduler {
    switch kind {
    case .euler:
        return try EulerDiscreteScheduler(config: config, steps: steps)
    case .eulerAncestral:
        return try EulerAncestralDiscreteScheduler(config: config, steps: steps)
    case .ddim:
        return try DDIMScheduler(config: config, steps: steps)
    case .dpmpp2m, .dpmpp2mKarras:
        guard var object = config.object else {
            throw ComponentConfigurationError(source: "DPMSolverMultistepScheduler scheduler_config.json",
                                              reason: "the configuration must be a JSON object")
        }
        object["algorithm_type"] = .string("dpmsolver++")
        object["solver_order"] = .number(2)
        object["use_karras_sigmas"] = .bool(kind == .dpmpp2mKarras)
        return try DPMSolverMultistepScheduler(config: .object(object), steps: steps)
    }
}

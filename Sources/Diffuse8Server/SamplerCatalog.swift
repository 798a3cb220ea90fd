import Diffuse8

/// AUTOMATIC1111's sampler and scheduler ("Schedule type") names for the samplers Diffuse8 has.
///
/// In A1111 (1.9 and later) a sampler and a scheduler are chosen separately; "automatic" means the sampler's own
/// default, which for "DPM++ 2M" is Karras. The older combined name "DPM++ 2M Karras" is accepted too.
public enum SamplerCatalog {
    public struct Sampler: Sendable, Encodable {
        public var name: String
        public var aliases: [String]
        public var options: [String: String]
    }

    public struct ScheduleType: Sendable, Encodable {
        public var name: String
        public var label: String
        public var aliases: [String]?
        public var default_rho: Double
        public var need_inner_model: Bool
    }

    /// `GET /sdapi/v1/samplers`, in A1111's layout and names.
    public static let samplers: [Sampler] = [
        Sampler(name: "Euler", aliases: ["k_euler"], options: [:]),
        Sampler(name: "Euler a", aliases: ["k_euler_a", "k_euler_ancestral"], options: ["uses_ensd": "True"]),
        Sampler(name: "DDIM", aliases: ["ddim"], options: [:]),
        Sampler(name: "DPM++ 2M", aliases: ["k_dpmpp_2m"], options: ["scheduler": "karras"]),
    ]

    /// `GET /sdapi/v1/schedulers`.
    public static let scheduleTypes: [ScheduleType] = [
        ScheduleType(name: "automatic", label: "Automatic", aliases: nil, default_rho: -1, need_inner_model: false),
        ScheduleType(name: "karras", label: "Karras", aliases: nil, default_rho: 7, need_inner_model: false),
    ]

    /// The sampler for an A1111 `sampler_name` (a name or alias, any case) and `scheduler` (nil, "automatic" or
    /// "karras", name or label). Throws a message listing what is accepted.
    public static func resolve(sampler: String, scheduler: String?) throws(CatalogError) -> SchedulerKind {
        let name = sampler.lowercased()
        let schedule = (scheduler ?? "automatic").lowercased()
        if name == "dpm++ 2m karras" || name == "k_dpmpp_2m_ka" {
            guard schedule == "automatic" || schedule == "karras" else {
                throw CatalogError(field: "scheduler", "scheduler '\(scheduler ?? "")' conflicts with sampler '\(sampler)'; use 'automatic' or 'karras'")
            }
            return .dpmpp2mKarras
        }
        guard let entry = samplers.first(where: { $0.name.lowercased() == name || $0.aliases.contains(name) }) else {
            throw CatalogError(field: "sampler_name", "Sampler not found: '\(sampler)'; available: \(samplers.map(\.name).joined(separator: ", "))")
        }
        guard scheduleTypes.contains(where: { $0.name == schedule || $0.label.lowercased() == schedule }) else {
            throw CatalogError(field: "scheduler", "Scheduler not found: '\(scheduler ?? "")'; available: \(scheduleTypes.map(\.name).joined(separator: ", "))")
        }
        switch (entry.name, schedule) {
        case ("Euler", "automatic"): return .euler
        case ("Euler a", "automatic"): return .eulerAncestral
        case ("DDIM", "automatic"): return .ddim
        case ("DPM++ 2M", _): return .dpmpp2mKarras
        default:
            throw CatalogError(field: "scheduler", "scheduler '\(schedule)' is not available for sampler '\(entry.name)' (Karras: DPM++ 2M only)")
        }
    }

    public struct CatalogError: Error, Sendable {
        public var field: String
        public var message: String
        init(field: String, _ message: String) { self.field = field; self.message = message }
    }
}

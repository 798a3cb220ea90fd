#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Settings read once from `DIFFUSE8_*` environment variables. They are read lazily, where nothing can be thrown, so a
/// value outside the allowed ones stops the process with a message naming them (exit status 2), not a trap.
enum EnvironmentSetting {
    /// The case of `T` the variable names (nil when it is unset or empty).
    static func choice<T: RawRepresentable & CaseIterable>(_ name: String, of type: T.Type) -> T? where T.RawValue == String {
        guard let raw = getenv(name) else { return nil }
        let value = String(cString: raw)
        if value.isEmpty { return nil }
        guard let choice = T.allCases.first(where: { $0.rawValue == value }) else {
            stop("\(name)=\(value) is not allowed; allowed: \(T.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return choice
    }

    /// Writes `error: message` to standard error and exits with status 2.
    static func stop(_ message: String) -> Never {
        fputs("error: \(message)\n", stderr)
        exit(2)
    }
}

/// The values of an on/off setting.
enum Switch: String, CaseIterable {
    case on, off
}

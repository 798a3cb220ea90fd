/// A model component's `config.json` (UNet, text encoder, VAE) that cannot be read or asks for something
/// this implementation does not support. The description names the file, the key and its value, and says
/// what is wrong or what is supported instead.
public struct ComponentConfigurationError: Error, CustomStringConvertible, Sendable {
    /// The file the configuration came from (or a label when it was given as parsed JSON).
    public let source: String
    /// The `config.json` key at fault; nil when the problem is the whole file.
    public let key: String?
    /// The offending value as JSON text ("(missing)" when the key is absent); nil without a key.
    public let value: String?
    /// Why it is rejected and what is supported instead.
    public let reason: String

    public init(source: String, key: String? = nil, value: String? = nil, reason: String) {
        self.source = source
        self.key = key
        self.value = value
        self.reason = reason
    }

    public var description: String {
        guard let key else { return "\(source): \(reason)" }
        return "\(source): `\(key)` = \(value ?? "(missing)"): \(reason)"
    }
}

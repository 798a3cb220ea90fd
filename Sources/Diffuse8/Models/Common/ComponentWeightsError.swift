/// A model component's weights that do not match its configuration: a missing, misshapen or unused
/// tensor. The description names the tensor(s) and the component.
public struct ComponentWeightsError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

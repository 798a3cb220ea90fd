/// `torch.nn.LayerNorm` (affine) over the last dimension. A reference type so that a backend can key the
/// weights it prepared for it by identity.
public final class LayerNorm {
    /// The state-dict prefix (`<name>.weight`, `<name>.bias`).
    public let name: String
    public var weight: Tensor
    public var bias: Tensor
    public let epsilon: Float

    public init(_ store: TensorStore, _ prefix: String, epsilon: Float) throws {
        name = prefix
        weight = try store.tensor(named: prefix + ".weight")
        bias = try store.tensor(named: prefix + ".bias")
        self.epsilon = epsilon
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        CPUKernels.layerNorm(x, weight: weight, bias: bias, epsilon: epsilon)
    }
}

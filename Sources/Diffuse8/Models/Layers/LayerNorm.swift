/// `torch.nn.LayerNorm` (affine) over the last dimension.
public struct LayerNorm {
    public var weight: Tensor
    public var bias: Tensor
    public let epsilon: Float

    public init(_ store: TensorStore, _ prefix: String, epsilon: Float) throws {
        weight = try store.tensor(named: prefix + ".weight")
        bias = try store.tensor(named: prefix + ".bias")
        self.epsilon = epsilon
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        CPUKernels.layerNorm(x, weight: weight, bias: bias, epsilon: epsilon)
    }
}

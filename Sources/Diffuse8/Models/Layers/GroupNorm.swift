/// `torch.nn.GroupNorm` (affine) on NCHW, optionally fused with the SiLU that follows it in
/// ResNet blocks. A reference type so that a backend can key the weights it prepared for it by identity.
public final class GroupNorm {
    /// The state-dict prefix (`<name>.weight`, `<name>.bias`).
    public let name: String
    public var weight: Tensor
    public var bias: Tensor
    public let groups: Int
    public let epsilon: Float

    public init(_ store: TensorStore, _ prefix: String, groups: Int, epsilon: Float) throws {
        name = prefix
        weight = try store.tensor(named: prefix + ".weight")
        bias = try store.tensor(named: prefix + ".bias")
        self.groups = groups
        self.epsilon = epsilon
    }

    public func callAsFunction(_ x: Tensor, fusedSiLU: Bool = false) -> Tensor {
        CPUKernels.groupNorm(x, groups: groups, weight: weight, bias: bias, epsilon: epsilon, fusedSiLU: fusedSiLU)
    }
}

/// Placeholder: replaced by the MT19937 implementation matching `torch.Generator("cpu")`.
public struct TorchGenerator {
    public init(seed: UInt64) {}
    public mutating func randn(_ shape: [Int]) -> Tensor { fatalError("TorchGenerator.randn is not implemented yet") }
}

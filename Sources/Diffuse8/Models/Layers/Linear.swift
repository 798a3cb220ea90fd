/// `torch.nn.Linear`: y = x·Wᵀ + b over the last dimension. Weights `<prefix>.weight` [out, in]
/// and optional `<prefix>.bias` [out].
///
/// This is one of the two quantizable layer kinds (with `Conv2d`); `name` is its state-dict prefix,
/// the key quantization recipes and calibration statistics use.
public final class Linear {
    public let name: String
    public var weight: Tensor
    public var bias: Tensor?

    public init(name: String, weight: Tensor, bias: Tensor?) {
        self.name = name
        self.weight = weight
        self.bias = bias
    }

    /// Loads `<prefix>.weight` and, when present (or required), `<prefix>.bias`.
    public convenience init(_ store: TensorStore, _ prefix: String, bias: Bool = true) throws {
        let b: Tensor? = bias ? try store.tensor(named: prefix + ".bias") : nil
        self.init(name: prefix, weight: try store.tensor(named: prefix + ".weight"), bias: b)
    }

    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        CPUKernels.linear(x, weight: weight, bias: bias)
    }
}

/// `torch.nn.Linear`: y = x·Wᵀ + b over the last dimension. Weights `<prefix>.weight` [out, in]
/// and optional `<prefix>.bias` [out].
///
/// This is one of the two quantizable layer kinds (with `Conv2d`); `name` is its state-dict prefix,
/// the key quantization recipes and calibration statistics use.
public final class Linear {
    public let name: String
    /// The FP32 weight. On the CPU it is held packed for the SGEMM after the first full-precision call (reading it
    /// then unpacks a copy; assigning it replaces the pack).
    public var weight: Tensor {
        get { weightStorage.tensor }
        set { weightStorage.tensor = newValue }
    }
    let weightStorage: LayerWeightStorage
    public var bias: Tensor?
    /// Replaces the full-precision computation when set (calibration "observe" mode, simulated
    /// quantization). `nil` (the default) runs the plain FP32 kernel with no extra work.
    public var executionHook: LinearExecutionHook?

    public init(name: String, weight: Tensor, bias: Tensor?) {
        self.name = name
        self.weightStorage = LayerWeightStorage(weight)
        self.bias = bias
    }

    /// Loads `<prefix>.weight` and, when present (or required), `<prefix>.bias`.
    public convenience init(_ store: TensorStore, _ prefix: String, bias: Bool = true) throws {
        let b: Tensor? = bias ? try store.tensor(named: prefix + ".bias") : nil
        self.init(name: prefix, weight: try store.tensor(named: prefix + ".weight"), bias: b)
    }

    public var inFeatures: Int { weightShape[1] }
    public var outFeatures: Int { weightShape[0] }
    /// The weight's shape, also after `releaseHostWeight`.
    public var weightShape: [Int] { releasedWeightShape ?? weightStorage.shape }
    private var releasedWeightShape: [Int]?

    /// Replaces the host weight by an empty tensor once a backend holds its own copy (shapes stay known).
    public func releaseHostWeight() {
        guard releasedWeightShape == nil else { return }
        releasedWeightShape = weightStorage.shape
        weight = Tensor(zeros: [0])
    }

    /// The weight kind: nil for a dense (full-precision) weight, else the 8-bit layer it holds (`weight` is then
    /// its dequantized codes). Backends execute each kind their own way; the CPU simulates it.
    public var quantization: QuantizedLayer? { (executionHook as? QuantizedExecutionHook)?.layer }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        if let executionHook { return executionHook.run(self, x) }
        return fullPrecision(x)
    }

    /// The full-precision result, ignoring any hook (hooks call this to observe or compare).
    public func fullPrecision(_ x: Tensor) -> Tensor {
        CPUKernels.linear(x, weight: weightStorage.packed(for: CPUFloatKernel.active, role: .linearB), bias: bias)
    }
}

/// Runs a `Linear` layer in another mode than full precision (see `Quantization/`).
public protocol LinearExecutionHook: AnyObject {
    func run(_ layer: Linear, _ x: Tensor) -> Tensor
}

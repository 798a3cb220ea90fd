/// `torch.nn.Conv2d` with square kernel, symmetric zero padding, NCHW. Weights `<prefix>.weight`
/// [out, in, kh, kw] and `<prefix>.bias` [out].
///
/// A quantizable layer kind; `name` is its state-dict prefix.
public final class Conv2d {
    public let name: String
    /// The FP32 weight. On the CPU it is held packed for the SGEMM after the first full-precision call (reading it
    /// then unpacks a copy; assigning it replaces the pack).
    public var weight: Tensor {
        get { weightStorage.tensor }
        set { weightStorage.tensor = newValue }
    }
    let weightStorage: LayerWeightStorage
    public var bias: Tensor?
    public let stride: Int
    public let padding: Int
    /// Replaces the full-precision computation when set (observe / simulate modes); `nil` = plain FP32.
    public var executionHook: Conv2dExecutionHook?

    public init(name: String, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0) {
        self.name = name
        self.weightStorage = LayerWeightStorage(weight)
        self.bias = bias
        self.stride = stride
        self.padding = padding
    }

    public convenience init(_ store: TensorStore, _ prefix: String, stride: Int = 1, padding: Int = 0) throws {
        self.init(name: prefix, weight: try store.tensor(named: prefix + ".weight"),
                  bias: try store.tensor(named: prefix + ".bias"), stride: stride, padding: padding)
    }

    public var inChannels: Int { weightShape[1] }
    public var outChannels: Int { weightShape[0] }
    /// The weight's shape, also after `releaseHostWeight`.
    public var weightShape: [Int] { releasedWeightShape ?? weightStorage.shape }
    private var releasedWeightShape: [Int]?

    /// Replaces the host weight by an empty tensor once a backend holds its own copy (shapes stay known).
    public func releaseHostWeight() {
        guard releasedWeightShape == nil else { return }
        releasedWeightShape = weightStorage.shape
        weight = Tensor(zeros: [0])
    }

    /// The weight kind: nil for a dense weight, else the 8-bit layer it holds (see `Linear.quantization`).
    public var quantization: QuantizedLayer? { (executionHook as? QuantizedExecutionHook)?.layer }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        if let executionHook { return executionHook.run(self, x) }
        // Winograd (where `.fastest` picks it) transforms the plain weight itself; the im2col GEMM uses the packed one.
        if WinogradConvolution.runs(input: x.shape, weight: weightShape, stride: stride, padding: padding) {
            return CPUKernels.conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, algorithm: .fastest)
        }
        return fullPrecision(x)
    }

    /// The full-precision result, ignoring any hook.
    public func fullPrecision(_ x: Tensor) -> Tensor {
        CPUKernels.conv2d(x, weight: weightStorage.packed(for: CPUFloatKernel.active, role: .convolutionA), bias: bias,
                          stride: stride, padding: padding)
    }
}

/// Runs a `Conv2d` layer in another mode than full precision (see `Quantization/`).
public protocol Conv2dExecutionHook: AnyObject {
    func run(_ layer: Conv2d, _ x: Tensor) -> Tensor
}

/// A dense, row-major Float32 tensor: the value every model layer consumes and produces on the CPU.
///
/// Storage is a Swift array, so copies are copy-on-write. Layouts follow PyTorch/diffusers:
/// images and feature maps are NCHW, token sequences are [batch, tokens, channels].
public struct Tensor: Sendable {
    /// Extent of each dimension, outermost first.
    public var shape: [Int]
    /// `shape.reduce(1, *)` values in row-major order. Changing them drops `quantizedInput`.
    public var scalars: [Float] { didSet { quantizedInput = nil } }
    /// The INT8 codes of these values that a producer wrote for the real INT8 layers reading them (the CPU's
    /// producer quantization), so that those layers skip their own quantizing pass; nil for every other tensor.
    /// Immutable and shared by copies; any change of `scalars` drops it, so it always describes these values.
    var quantizedInput: CPUQuantizedInput? = nil

    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.reduce(1, *) == scalars.count,
                     "Tensor shape \(shape) needs \(shape.reduce(1, *)) scalars, got \(scalars.count)")
        self.shape = shape
        self.scalars = scalars
    }

    /// A tensor of zeros.
    public init(zeros shape: [Int]) {
        self.init(shape: shape, scalars: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    /// A tensor whose storage is filled by `body`, without zero-initialising it first.
    public init(shape: [Int], unsafeUninitialized body: (UnsafeMutableBufferPointer<Float>) -> Void) {
        let count = shape.reduce(1, *)
        self.shape = shape
        self.scalars = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            body(buffer)
            initialized = count
        }
    }

    public var count: Int { scalars.count }
    public var rank: Int { shape.count }

    /// The same values seen with another shape of equal element count (like `torch.reshape`).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var resolved = newShape
        if let inferred = newShape.firstIndex(of: -1) {
            let known = newShape.enumerated().filter { $0.offset != inferred }.map(\.element).reduce(1, *)
            resolved[inferred] = count / known
        }
        return Tensor(shape: resolved, scalars: scalars)
    }

    /// Elements `[start, end)` along dimension 0.
    public func slice(_ start: Int, _ end: Int) -> Tensor {
        let inner = shape.dropFirst().reduce(1, *)
        var newShape = shape
        newShape[0] = end - start
        return Tensor(shape: newShape, scalars: Array(scalars[(start * inner)..<(end * inner)]))
    }

    /// Concatenation along dimension 0 (like `torch.cat(dim=0)`).
    public static func concatenate(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty)
        var shape = parts[0].shape
        shape[0] = parts.map { $0.shape[0] }.reduce(0, +)
        return Tensor(shape: shape, scalars: parts.flatMap(\.scalars))
    }
}

extension Tensor {
    /// Relative L2 error ‖self − reference‖ / ‖reference‖, the measure parity tests use.
    public func relativeL2(to reference: Tensor) -> Double {
        precondition(count == reference.count, "shapes \(shape) and \(reference.shape) differ in size")
        var diff = 0.0, norm = 0.0
        for i in 0..<count {
            let d = Double(scalars[i]) - Double(reference.scalars[i])
            diff += d * d
            norm += Double(reference.scalars[i]) * Double(reference.scalars[i])
        }
        return norm == 0 ? diff.squareRoot() : (diff / norm).squareRoot()
    }
}

/// A `TensorStore` whose names are diffusers state-dict keys and whose tensors are read, on demand, from a store with
/// other names (an LDM/SGM single-file checkpoint), with the small reshapes the two layouts differ by.
final class MappedTensorStore: TensorStore {
    /// How one diffusers tensor is made from the source.
    enum Source {
        /// The source tensor as it is.
        case same(String)
        /// The source tensor with another shape (same element count), e.g. a 1×1 convolution read as a linear layer.
        case reshaped(String, [Int])
        /// The 2-D source tensor transposed.
        case transposed(String)
        /// Part `part` of `parts` equal slices along the first dimension (a fused q/k/v projection).
        case slice(String, part: Int, parts: Int)

        var sourceName: String {
            switch self {
            case .same(let n), .reshaped(let n, _), .transposed(let n), .slice(let n, _, _): return n
            }
        }
    }

    let base: TensorStore
    let sources: [String: Source]
    let tensorNames: [String]

    init(base: TensorStore, sources: [String: Source]) {
        self.base = base
        self.sources = sources
        tensorNames = sources.keys.sorted()
    }

    func tensor(named name: String) throws -> Tensor {
        guard let source = sources[name] else {
            throw ComponentWeightsError("no tensor '\(name)'")
        }
        switch source {
        case .same(let n):
            return try base.tensor(named: n)
        case .reshaped(let n, let shape):
            let t = try base.tensor(named: n)
            guard t.count == shape.reduce(1, *) else {
                throw ComponentWeightsError("tensor '\(n)' has shape \(t.shape), which cannot be read as \(shape)")
            }
            return Tensor(shape: shape, scalars: t.scalars)
        case .transposed(let n):
            let t = try base.tensor(named: n)
            guard t.shape.count == 2 else { throw ComponentWeightsError("tensor '\(n)' has shape \(t.shape); expected a matrix") }
            let (rows, columns) = (t.shape[0], t.shape[1])
            return Tensor(shape: [columns, rows]) { out in
                for r in 0..<rows { for c in 0..<columns { out[c * rows + r] = t.scalars[r * columns + c] } }
            }
        case .slice(let n, let part, let parts):
            let t = try base.tensor(named: n)
            guard let first = t.shape.first, first % parts == 0 else {
                throw ComponentWeightsError("tensor '\(n)' has shape \(t.shape); its first dimension must split into \(parts) equal parts")
            }
            var shape = t.shape
            shape[0] = first / parts
            let size = t.count / parts
            return Tensor(shape: shape, scalars: Array(t.scalars[(part * size)..<((part + 1) * size)]))
        }
    }
}

/// Named tensors of one model component. Names are the diffusers / transformers state-dict keys,
/// so weights map 1:1 onto the layers that use them.
public protocol TensorStore {
    /// Every tensor name, sorted.
    var tensorNames: [String] { get }
    /// The tensor converted to Float32. Throws when the name is absent or the data is invalid.
    func tensor(named name: String) throws -> Tensor
}

extension TensorStore {
    public func contains(_ name: String) -> Bool { tensorNames.contains(name) }
}

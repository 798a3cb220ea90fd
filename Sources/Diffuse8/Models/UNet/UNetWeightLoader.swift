/// A UNet weight file that does not match its configuration: a missing or unexpected tensor, or a tensor of
/// the wrong shape. Names the tensor(s).
public struct UNetWeightsError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Loads UNet layers from a `TensorStore`, checking each weight's shape against the configuration and
/// recording every tensor it reads, so that tensors the model never used can be reported (a wrong layout or
/// a config that does not belong to the weights shows up as unused or missing tensors).
final class UNetWeightLoader: TensorStore {
    let store: TensorStore
    let tensorNames: [String]
    private let names: Set<String>
    private(set) var used: Set<String> = []

    init(_ store: TensorStore) {
        self.store = store
        self.tensorNames = store.tensorNames
        self.names = Set(tensorNames)
    }

    func tensor(named name: String) throws -> Tensor {
        guard names.contains(name) else {
            throw UNetWeightsError("the UNet weights have no tensor '\(name)', which the configuration requires")
        }
        used.insert(name)
        return try store.tensor(named: name)
    }

    func tensor(_ name: String, shape: [Int]) throws -> Tensor {
        let t = try tensor(named: name)
        guard t.shape == shape else {
            throw UNetWeightsError("UNet tensor '\(name)' has shape \(t.shape); the configuration needs \(shape)")
        }
        return t
    }

    func linear(_ prefix: String, in inFeatures: Int, out outFeatures: Int, bias: Bool = true) throws -> Linear {
        Linear(name: prefix, weight: try tensor(prefix + ".weight", shape: [outFeatures, inFeatures]),
               bias: bias ? try tensor(prefix + ".bias", shape: [outFeatures]) : nil)
    }

    func conv(_ prefix: String, in inChannels: Int, out outChannels: Int, kernel: Int,
              stride: Int = 1, padding: Int = 0) throws -> Conv2d {
        Conv2d(name: prefix, weight: try tensor(prefix + ".weight", shape: [outChannels, inChannels, kernel, kernel]),
               bias: try tensor(prefix + ".bias", shape: [outChannels]), stride: stride, padding: padding)
    }

    func groupNorm(_ prefix: String, channels: Int, groups: Int, epsilon: Float) throws -> GroupNorm {
        let norm = try GroupNorm(self, prefix, groups: groups, epsilon: epsilon)
        try check(prefix + ".weight", norm.weight, [channels])
        try check(prefix + ".bias", norm.bias, [channels])
        return norm
    }

    func layerNorm(_ prefix: String, channels: Int, epsilon: Float) throws -> LayerNorm {
        let norm = try LayerNorm(self, prefix, epsilon: epsilon)
        try check(prefix + ".weight", norm.weight, [channels])
        try check(prefix + ".bias", norm.bias, [channels])
        return norm
    }

    /// The shared `ResnetBlock2D`, with its shapes checked: `time_emb_proj` must exist, and `conv_shortcut`
    /// exactly when the channel count changes (diffusers' `use_in_shortcut`).
    func resnet(_ prefix: String, in inChannels: Int, out outChannels: Int, timeEmbedding: Int,
                groups: Int, epsilon: Float, outputScaleFactor: Float) throws -> ResnetBlock2D {
        let shortcut = prefix + ".conv_shortcut.weight"
        if inChannels != outChannels {
            guard names.contains(shortcut) else {
                throw UNetWeightsError("the UNet weights have no tensor '\(shortcut)', which the configuration requires (\(inChannels) → \(outChannels) channels)")
            }
        } else if names.contains(shortcut) {
            throw UNetWeightsError("UNet tensor '\(shortcut)' exists but the configuration gives \(prefix) no shortcut (\(inChannels) → \(outChannels) channels)")
        }
        guard names.contains(prefix + ".time_emb_proj.weight") else {
            throw UNetWeightsError("the UNet weights have no tensor '\(prefix).time_emb_proj.weight', which the configuration requires")
        }
        let block = try ResnetBlock2D(self, prefix, groups: groups, epsilon: epsilon, outputScaleFactor: outputScaleFactor)
        try check(prefix + ".norm1.weight", block.norm1.weight, [inChannels])
        try check(prefix + ".norm1.bias", block.norm1.bias, [inChannels])
        try check(prefix + ".conv1.weight", block.conv1.weight, [outChannels, inChannels, 3, 3])
        try check(prefix + ".conv1.bias", block.conv1.bias, [outChannels])
        if let projection = block.timeEmbeddingProjection {
            try check(prefix + ".time_emb_proj.weight", projection.weight, [outChannels, timeEmbedding])
            try check(prefix + ".time_emb_proj.bias", projection.bias, [outChannels])
        }
        try check(prefix + ".norm2.weight", block.norm2.weight, [outChannels])
        try check(prefix + ".norm2.bias", block.norm2.bias, [outChannels])
        try check(prefix + ".conv2.weight", block.conv2.weight, [outChannels, outChannels, 3, 3])
        try check(prefix + ".conv2.bias", block.conv2.bias, [outChannels])
        if let conv = block.shortcut {
            try check(shortcut, conv.weight, [outChannels, inChannels, 1, 1])
            try check(prefix + ".conv_shortcut.bias", conv.bias, [outChannels])
        }
        return block
    }

    private func check(_ name: String, _ t: Tensor?, _ shape: [Int]) throws {
        guard let t, t.shape == shape else {
            throw UNetWeightsError("UNet tensor '\(name)' has shape \(t?.shape.description ?? "(none)"); the configuration needs \(shape)")
        }
    }

    /// Throws when the store holds tensors the model did not read.
    func checkAllUsed() throws {
        let unused = tensorNames.filter { !used.contains($0) }
        guard unused.isEmpty else {
            let shown = unused.prefix(8).map { "'\($0)'" }.joined(separator: ", ")
            throw UNetWeightsError("the UNet weights hold \(unused.count) tensor(s) the configuration does not use: \(shown)\(unused.count > 8 ? ", …" : "") — the weights and config.json do not match")
        }
    }
}

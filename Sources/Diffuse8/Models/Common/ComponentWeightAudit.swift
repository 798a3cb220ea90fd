/// Wraps a component's weight store (UNet, text encoder, VAE) and checks the weights against the
/// configuration: a tensor the model asks for must exist, each layer must have the shapes the
/// configuration implies, and every stored tensor must be used — a `num_hidden_layers`,
/// `layers_per_block` or `use_quant_conv` that does not belong to the weights would otherwise silently
/// drop layers. Every failure is a `ComponentWeightsError` naming the tensor.
final class ComponentWeightAudit: TensorStore {
    let base: TensorStore
    /// The model named in errors ("UNet", "AutoencoderKL", ...).
    let component: String
    let tensorNames: [String]
    private let names: Set<String>
    private(set) var used: Set<String> = []

    init(_ base: TensorStore, component: String) {
        self.base = base
        self.component = component
        tensorNames = base.tensorNames
        names = Set(tensorNames)
    }

    func tensor(named name: String) throws -> Tensor {
        guard names.contains(name) else {
            throw ComponentWeightsError("the \(component) weights have no tensor '\(name)', which the configuration requires")
        }
        used.insert(name)
        return try base.tensor(named: name)
    }

    /// Throws when a tensor other than those matching `ignoring` was never read.
    func requireAllUsed(ignoring: (String) -> Bool = { _ in false }) throws {
        let unused = tensorNames.filter { !used.contains($0) && !ignoring($0) }
        guard unused.isEmpty else {
            let shown = unused.prefix(8).map { "'\($0)'" }.joined(separator: ", ")
            throw ComponentWeightsError(
                "the \(component) weights hold \(unused.count) tensor(s) the configuration does not use: "
                + "\(shown)\(unused.count > 8 ? ", …" : ""); the config.json and the weights do not belong together")
        }
    }

    // MARK: Shape checks of loaded layers

    /// Throws unless `tensor` exists and has `shape`; `name` is the state-dict key.
    static func requireShape(_ tensor: Tensor?, _ shape: [Int], _ name: String) throws {
        guard let tensor, tensor.shape == shape else {
            throw ComponentWeightsError(
                "tensor '\(name)' has shape \(tensor?.shape.description ?? "(none)") but the configuration needs \(shape); "
                + "the config.json and the weights do not belong together")
        }
    }

    /// weight [out, in], bias (when present) [out].
    static func check(_ linear: Linear, out: Int, in input: Int) throws {
        try requireShape(linear.weight, [out, input], linear.name + ".weight")
        if let bias = linear.bias { try requireShape(bias, [out], linear.name + ".bias") }
    }

    /// weight [out, in, kernel, kernel], bias (when present) [out].
    static func check(_ conv: Conv2d, out: Int, in input: Int, kernel: Int) throws {
        try requireShape(conv.weight, [out, input, kernel, kernel], conv.name + ".weight")
        if let bias = conv.bias { try requireShape(bias, [out], conv.name + ".bias") }
    }

    static func check(_ norm: GroupNorm, channels: Int, _ prefix: String) throws {
        try requireShape(norm.weight, [channels], prefix + ".weight")
        try requireShape(norm.bias, [channels], prefix + ".bias")
    }

    static func check(_ norm: LayerNorm, channels: Int, _ prefix: String) throws {
        try requireShape(norm.weight, [channels], prefix + ".weight")
        try requireShape(norm.bias, [channels], prefix + ".bias")
    }

    /// A `ResnetBlock2D` from `input` to `output` channels: a 1×1 `conv_shortcut` exactly when they differ
    /// (diffusers' `use_in_shortcut`), and a `time_emb_proj` from `timeEmbedding` channels exactly when
    /// that is given (the UNet's resnets; the VAE's have none).
    static func check(_ block: ResnetBlock2D, in input: Int, out output: Int, timeEmbedding: Int?) throws {
        let prefix = String(block.conv1.name.dropLast(".conv1".count))
        try check(block.norm1, channels: input, prefix + ".norm1")
        try check(block.conv1, out: output, in: input, kernel: 3)
        switch (block.timeEmbeddingProjection, timeEmbedding) {
        case (nil, nil): break
        case (let projection?, let width?): try check(projection, out: output, in: width)
        case (nil, _?):
            throw ComponentWeightsError("the weights have no tensor '\(prefix).time_emb_proj.weight', which the configuration requires")
        case (_?, nil):
            throw ComponentWeightsError("the weights have '\(prefix).time_emb_proj.weight', which this model's resnets do not have")
        }
        try check(block.norm2, channels: output, prefix + ".norm2")
        try check(block.conv2, out: output, in: output, kernel: 3)
        switch (block.shortcut, input == output) {
        case (nil, true): break
        case (let shortcut?, false): try check(shortcut, out: output, in: input, kernel: 1)
        case (nil, false):
            throw ComponentWeightsError(
                "the weights have no tensor '\(prefix).conv_shortcut.weight', which the configuration requires (\(input) → \(output) channels)")
        case (_?, true):
            throw ComponentWeightsError(
                "tensor '\(prefix).conv_shortcut.weight' exists but the configuration gives \(prefix) no shortcut (\(input) → \(output) channels)")
        }
    }

    // MARK: Load and check

    func linear(_ prefix: String, in input: Int, out: Int, bias: Bool = true) throws -> Linear {
        let layer = try Linear(self, prefix, bias: bias)
        try Self.check(layer, out: out, in: input)
        return layer
    }

    func conv(_ prefix: String, in input: Int, out: Int, kernel: Int, stride: Int = 1, padding: Int = 0) throws -> Conv2d {
        let layer = try Conv2d(self, prefix, stride: stride, padding: padding)
        try Self.check(layer, out: out, in: input, kernel: kernel)
        return layer
    }

    func groupNorm(_ prefix: String, channels: Int, groups: Int, epsilon: Float) throws -> GroupNorm {
        let norm = try GroupNorm(self, prefix, groups: groups, epsilon: epsilon)
        try Self.check(norm, channels: channels, prefix)
        return norm
    }

    func layerNorm(_ prefix: String, channels: Int, epsilon: Float) throws -> LayerNorm {
        let norm = try LayerNorm(self, prefix, epsilon: epsilon)
        try Self.check(norm, channels: channels, prefix)
        return norm
    }

    func resnet(_ prefix: String, in input: Int, out output: Int, timeEmbedding: Int? = nil,
                groups: Int, epsilon: Float, outputScaleFactor: Float = 1) throws -> ResnetBlock2D {
        let block = try ResnetBlock2D(self, prefix, groups: groups, epsilon: epsilon, outputScaleFactor: outputScaleFactor)
        try Self.check(block, in: input, out: output, timeEmbedding: timeEmbedding)
        return block
    }
}

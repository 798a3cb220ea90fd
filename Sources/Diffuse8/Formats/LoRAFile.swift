/// A LoRA (low-rank adaptation) file in one of the layouts people download:
///
/// - kohya (sd-scripts, A1111): `lora_unet_<module with _>.lora_down.weight` / `.lora_up.weight` / `.alpha`,
///   text encoders `lora_te_…` (SD1.x) or `lora_te1_…` / `lora_te2_…` (SDXL); LoCon convolutions (3×3 down,
///   1×1 up) included. UNet module names in diffusers naming (SD1.x) or the LDM numbering (`input_blocks_4_1_…`,
///   as SDXL trainers write them).
/// - diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight` (or the older `.lora.down.weight` /
///   `.lora.up.weight`), `text_encoder.…`, `text_encoder_2.…`, optional `.alpha`.
///
/// A module's update is `ΔW = scale · up · down` with scale = alpha / rank (1 without alpha), times the weight the
/// user gives; `merge` adds it to the full-precision weights.
public final class LoRAFile: @unchecked Sendable {
    /// Which network a LoRA module adapts.
    public enum Component: String, Sendable { case unet, textEncoder = "text_encoder", textEncoder2 = "text_encoder_2" }

    /// One adapted module.
    public struct Module: Sendable {
        public let component: Component
        /// The key stem in the file (e.g. `lora_unet_down_blocks_0_attentions_0_proj_in`).
        public let key: String
        /// Normalised name: the module path with `_` for `.` (kohya) or with dots (diffusers/PEFT).
        public let name: String
        /// Whether `name` is dotted (diffusers/PEFT) rather than kohya's underscores.
        public let dotted: Bool
        public let down: Tensor
        public let up: Tensor
        public let alpha: Float?

        public var rank: Int { down.shape[0] }
        public var scale: Float { alpha.map { $0 / Float(rank) } ?? 1 }
    }

    public let path: String
    public let modules: [Module]

    public convenience init(path: String) throws {
        try self.init(file: SafetensorsFile(path: path))
    }

    /// The LoRA in an opened safetensors file (named in errors by its path).
    init(file: SafetensorsFile) throws {
        let path = file.path
        self.path = path
        let names = Set(file.tensorNames)
        var modules: [Module] = []
        let patterns: [(down: String, up: String)] = [(".lora_down.weight", ".lora_up.weight"), (".lora_A.weight", ".lora_B.weight"),
                                                      (".lora.down.weight", ".lora.up.weight")]
        var used: Set<String> = []
        for key in file.tensorNames {
            guard let pattern = patterns.first(where: { key.hasSuffix($0.down) }) else { continue }
            let stem = String(key.dropLast(pattern.down.count))
            guard names.contains(stem + pattern.up) else {
                throw LoRAError(path, "\(key) has no matching '\(stem + pattern.up)'")
            }
            let alphaKey = stem + ".alpha"
            let alpha = names.contains(alphaKey) ? try file.tensor(named: alphaKey).scalars.first : nil
            used.formUnion([key, stem + pattern.up, alphaKey])
            guard let (component, name, dotted) = Self.split(stem) else {
                throw LoRAError(path, "'\(key)': unknown LoRA key prefix (expected lora_unet_, lora_te_, lora_te1_, lora_te2_, unet., text_encoder., text_encoder_2.)")
            }
            let down = try file.tensor(named: key), up = try file.tensor(named: stem + pattern.up)
            guard down.shape.count >= 2, up.shape.count >= 2, down.shape[0] > 0, up.shape[1] == down.shape[0] else {
                throw LoRAError(path, "'\(stem)': down \(down.shape) and up \(up.shape) do not chain (up's second dimension must be down's rank, at least 1)")
            }
            modules.append(Module(component: component, key: stem, name: name, dotted: dotted, down: down, up: up, alpha: alpha))
        }
        guard !modules.isEmpty else {
            let shown = file.tensorNames.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
            throw LoRAError(path, "no LoRA weights found (no *.lora_down/lora_up, lora_A/lora_B keys); first keys: \(shown)")
        }
        self.modules = modules
    }

    /// (component, module name, dotted) of a key stem.
    static func split(_ stem: String) -> (Component, String, Bool)? {
        let prefixes: [(String, Component, Bool)] = [
            ("lora_unet_", .unet, false), ("lora_te1_", .textEncoder, false), ("lora_te2_", .textEncoder2, false),
            ("lora_te_", .textEncoder, false), ("unet.", .unet, true), ("text_encoder_2.", .textEncoder2, true),
            ("text_encoder.", .textEncoder, true),
        ]
        for (prefix, component, dotted) in prefixes where stem.hasPrefix(prefix) {
            return (component, String(stem.dropFirst(prefix.count)), dotted)
        }
        return nil
    }

    /// The update of one module for a layer of weight shape `shape` ([out, in] or [out, in, kh, kw]).
    static func delta(_ m: Module, shape: [Int], weight: Float) throws -> Tensor {
        let rank = m.rank
        let out = m.up.shape[0]
        let inner = m.down.count / rank
        guard out == shape[0], inner == shape.dropFirst().reduce(1, *), m.up.count == out * rank else {
            throw ComponentWeightsError("LoRA module '\(m.key)': up \(m.up.shape) · down \(m.down.shape) does not fit the layer's weight \(shape)")
        }
        let scale = m.scale * weight
        return Tensor(shape: shape) { d in
            for o in 0..<out {
                for i in 0..<inner {
                    var sum: Float = 0
                    for r in 0..<rank { sum += m.up.scalars[o * rank + r] * m.down.scalars[r * inner + i] }
                    d[o * inner + i] = scale * sum
                }
            }
        }
    }
}

/// A LoRA file that cannot be used; the description names the file and what is wrong.
public struct LoRAError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ path: String, _ message: String) { description = "\(path): \(message)" }
}

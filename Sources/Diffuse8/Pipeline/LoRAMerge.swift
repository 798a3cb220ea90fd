/// Merges LoRA updates into a model's full-precision weights (W ← W + weight · scale · up · down), matching each LoRA
/// module to a layer by its diffusers name, its kohya spelling (dots as underscores) or, for the UNet, its LDM
/// spelling (`input_blocks_4_1_…`, what SDXL kohya files use).
public enum LoRAMerge {
    /// What one merge did.
    public struct Report: Sendable {
        public var merged = 0
        /// Keys of LoRA modules that match no layer.
        public var unmatched: [String] = []
    }

    /// Merges `lora` × `weight` into `unet` and `textEncoders` (`text_encoder`, then SDXL's `text_encoder_2`).
    /// Throws when nothing matches (listing a few keys), when the LoRA adapts an encoder the model lacks, or when a
    /// matched module's shape does not fit its layer.
    @discardableResult
    ///
    /// Layers of a quantized UNet (simulated: a `SimulatedQuantizationHook`) get the update through
    /// `QuantizedLoRAUpdate` — merged into their re-derived full-precision weight and re-quantized with the stored
    /// statistics; `alphas` are the SmoothQuant α per layer from the folder's recipe.
    public static func merge(_ lora: LoRAFile, weight: Float, unet: UNet2DConditionModel, textEncoders: [CLIPTextModel],
                             alphas: [String: Float] = [:]) throws -> Report {
        if textEncoders.count < 2, let m = lora.modules.first(where: { $0.component == .textEncoder2 }) {
            throw LoRAError(lora.path, "adapts a second text encoder ('\(m.key)'), so it is for SDXL; this model has one text encoder (SD1.x/2.x)")
        }
        var layers: [String: (weight: () -> Tensor, set: (Tensor) -> Void)] = [:]
        func add(_ names: [String], _ get: @escaping () -> Tensor, _ set: @escaping (Tensor) -> Void) {
            for name in names { layers[name] = (get, set) }
        }
        let configuration = unet.configuration
        // quantized Linear layers collect their merged weights first: layers quantized as one group are re-quantized together
        var mergedQuantized: [ObjectIdentifier: Tensor] = [:]
        for layer in unet.linearLayers {
            if let hook = layer.executionHook as? SimulatedQuantizationHook {
                let id = ObjectIdentifier(layer)
                add(unetNames(layer.name, configuration), { mergedQuantized[id] ?? QuantizedLoRAUpdate.fullPrecisionWeight(hook.layer) },
                    { mergedQuantized[id] = $0 })
            } else {
                add(unetNames(layer.name, configuration), { layer.weight }, { layer.weight = $0 })
            }
        }
        for layer in unet.convolutionLayers {
            if let hook = layer.executionHook as? SimulatedQuantizationHook {
                add(unetNames(layer.name, configuration), { QuantizedLoRAUpdate.fullPrecisionWeight(hook.layer) }, { merged in
                    let q = QuantizedLoRAUpdate.requantized(hook.layer, merged: merged, alpha: nil)
                    layer.weight = q.weight.dequantized()
                    layer.executionHook = SimulatedQuantizationHook(q)
                })
            } else {
                add(unetNames(layer.name, configuration), { layer.weight }, { layer.weight = $0 })
            }
        }
        for (index, encoder) in textEncoders.enumerated() {
            let component: LoRAFile.Component = index == 0 ? .textEncoder : .textEncoder2
            for layer in encoder.linearLayers {
                let name = layer.name.hasPrefix("text_model.") ? String(layer.name.dropFirst("text_model.".count)) : layer.name
                add(["\(component.rawValue):\(name)", "\(component.rawValue):\(name.replacingOccurrences(of: ".", with: "_"))",
                     "\(component.rawValue):text_model_\(name.replacingOccurrences(of: ".", with: "_"))"],
                    { layer.weight }, { layer.weight = $0 })
            }
        }
        var report = Report()
        var updates: [(LoRAFile.Module, (weight: () -> Tensor, set: (Tensor) -> Void))] = []
        for module in lora.modules {
            var name = module.name
            if module.component != .unet, module.dotted, name.hasPrefix("text_model.") { name = String(name.dropFirst("text_model.".count)) }
            let key = module.component == .unet ? "unet:\(name)" : "\(module.component.rawValue):\(name)"
            if let layer = layers[key] { updates.append((module, layer)) } else { report.unmatched.append(module.key) }
        }
        guard !updates.isEmpty else {
            let shown = report.unmatched.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
            throw LoRAError(lora.path, "none of its \(lora.modules.count) modules matches a layer of this model (e.g. \(shown)); "
                            + "it is for another architecture")
        }
        for (module, layer) in updates {
            let current = layer.weight()
            let delta: Tensor
            do { delta = try LoRAFile.delta(module, shape: current.shape, weight: weight) } catch {
                throw LoRAError(lora.path, "\(error); the LoRA is for another model (e.g. SDXL vs SD1.x)")
            }
            layer.set(Tensor(shape: current.shape, scalars: zip(current.scalars, delta.scalars).map { $0 + $1 }))
            report.merged += 1
        }
        let quantizedLinears = unet.linearLayers.filter { $0.executionHook is SimulatedQuantizationHook }
        let groups = Quantizer.inputGroups(unet, among: Set(quantizedLinears.map(ObjectIdentifier.init)), separate: false)
            .flatMap(Self.sharingQuantization)
        for group in groups where group.contains(where: { mergedQuantized[ObjectIdentifier($0)] != nil }) {
            let stored = group.map { ($0.executionHook as! SimulatedQuantizationHook).layer }
            let merged = zip(group, stored).map { mergedQuantized[ObjectIdentifier($0)] ?? QuantizedLoRAUpdate.fullPrecisionWeight($1) }
            let updated = QuantizedLoRAUpdate.requantized(group: stored, merged: merged, alphas: group.map { alphas[$0.name] })
            for (layer, q) in zip(group, updated) {
                layer.weight = q.weight.dequantized()
                layer.executionHook = SimulatedQuantizationHook(q)
            }
        }
        return report
    }

    /// `group` split into runs of layers whose stored quantization (input amax, SmoothQuant vector, per-tensor weight
    /// scale) is one: folders
    /// written before every cross-attention's K/V shared one quantizer share it per module only.
    static func sharingQuantization(_ group: [Linear]) -> [[Linear]] {
        var runs: [[Linear]] = []
        for layer in group {
            let q = (layer.executionHook as? SimulatedQuantizationHook)?.layer
            if let last = runs.last?.last, let p = (last.executionHook as? SimulatedQuantizationHook)?.layer,
               p.inputAmax == q?.inputAmax, p.smoothing == q?.smoothing,
               p.weight.scales.count > 1 && (q?.weight.scales.count ?? 0) > 1 || p.weight.scales == q?.weight.scales {
                runs[runs.count - 1].append(layer)
            } else {
                runs.append([layer])
            }
        }
        return runs
    }

    /// A UNet layer's lookup names: diffusers dotted, kohya underscored, and the LDM numbering underscored.
    static func unetNames(_ name: String, _ c: UNetConfiguration) -> [String] {
        var names = ["unet:\(name)", "unet:\(name.replacingOccurrences(of: ".", with: "_"))"]
        if let ldm = ldmName(name, c) { names.append("unet:\(ldm.replacingOccurrences(of: ".", with: "_"))") }
        return names
    }

    /// The LDM module path of a diffusers UNet module path (the inverse of `LDMKeyMapping.unet`).
    static func ldmName(_ name: String, _ c: UNetConfiguration) -> String? {
        let direct = ["time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                      "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
                      "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"]
        if let d = direct[name] { return d }
        let parts = name.split(separator: ".").map(String.init)
        let resnet = ["norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
                      "conv2": "out_layers.3", "conv_shortcut": "skip_connection"]
        func resnetTail(_ tail: ArraySlice<String>) -> String? {
            guard let first = tail.first, let mapped = resnet[first] else { return nil }
            return ([mapped] + tail.dropFirst()).joined(separator: ".")
        }
        let blocks = c.layersPerBlock.count
        if parts.first == "mid_block", parts.count >= 4, let i = Int(parts[2]) {
            if parts[1] == "resnets" { return resnetTail(parts[3...]).map { "middle_block.\(i * 2).\($0)" } }
            if parts[1] == "attentions" { return "middle_block.1." + parts[3...].joined(separator: ".") }
            return nil
        }
        guard parts.count >= 4, let b = Int(parts[1]), b < blocks else { return nil }
        if parts[0] == "down_blocks" {
            var index = 1
            for k in 0..<b { index += c.layersPerBlock[k] + 1 }
            if parts[2] == "downsamplers" { return "input_blocks.\(index + c.layersPerBlock[b]).0.op" }
            guard let l = Int(parts[3]) else { return nil }
            if parts[2] == "resnets" { return resnetTail(parts[4...]).map { "input_blocks.\(index + l).0.\($0)" } }
            if parts[2] == "attentions" { return "input_blocks.\(index + l).1." + parts[4...].joined(separator: ".") }
        } else if parts[0] == "up_blocks" {
            var index = 0
            for k in 0..<b { index += c.layersPerBlock[blocks - 1 - k] + 1 }
            let layers = c.layersPerBlock[blocks - 1 - b] + 1
            if parts[2] == "upsamplers" {
                let hasAttention = c.upBlockTypes[b] == .crossAttention
                return "output_blocks.\(index + layers - 1).\(hasAttention ? 2 : 1)." + parts[4...].joined(separator: ".")
            }
            guard let l = Int(parts[3]) else { return nil }
            if parts[2] == "resnets" { return resnetTail(parts[4...]).map { "output_blocks.\(index + l).0.\($0)" } }
            if parts[2] == "attentions" { return "output_blocks.\(index + l).1." + parts[4...].joined(separator: ".") }
        }
        return nil
    }
}

/// Converts the key names of original Stable Diffusion checkpoints (the LDM layout of SD1.x and the SGM layout of
/// SDXL) to diffusers state-dict names, component by component — the same correspondence diffusers'
/// `from_single_file` converters use. Each function takes the keys below the component's prefix and returns the
/// diffusers name → source of every key it understands, plus the keys it does not.
enum LDMKeyMapping {
    typealias Result = (sources: [String: MappedTensorStore.Source], unmatched: [String])

    /// UNet (`model.diffusion_model.*`): `input_blocks` / `middle_block` / `output_blocks` numbering → diffusers blocks.
    /// `layersPerBlock`: the UNet configuration's per-block resnet count (up blocks have one more).
    static func unet(_ keys: [String], prefix: String, layersPerBlock: [Int]) -> Result {
        let blocks = layersPerBlock.count
        // input_blocks.i (i ≥ 1) in order: each down block's resnet/attention layers, then its downsampler.
        var inputSlots: [(block: Int, layer: Int?)] = []
        for b in 0..<blocks {
            for l in 0..<layersPerBlock[b] { inputSlots.append((b, l)) }
            if b < blocks - 1 { inputSlots.append((b, nil)) }
        }
        var outputSlots: [(block: Int, layer: Int)] = []
        for b in 0..<blocks {
            for l in 0...layersPerBlock[blocks - 1 - b] { outputSlots.append((b, l)) }
        }
        let direct = ["time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
                      "label_emb.0.0.": "add_embedding.linear_1.", "label_emb.0.2.": "add_embedding.linear_2.",
                      "input_blocks.0.0.": "conv_in.", "out.0.": "conv_norm_out.", "out.2.": "conv_out."]
        var sources: [String: MappedTensorStore.Source] = [:]
        var unmatched: [String] = []
        for key in keys {
            let name = String(key.dropFirst(prefix.count))
            if let (from, to) = direct.first(where: { name.hasPrefix($0.key) }) {
                sources[to + name.dropFirst(from.count)] = .same(key)
                continue
            }
            // `input_blocks.i.j.rest`, `output_blocks.i.j.rest`, `middle_block.j.rest` (read as i = 0)
            var parts = name.split(separator: ".", maxSplits: 3).map(String.init)
            if parts.first == "middle_block" { parts = ["middle_block", "0"] + name.split(separator: ".", maxSplits: 2).dropFirst().map(String.init) }
            guard parts.count == 4, let i = Int(parts[1]), let j = Int(parts[2]) else { unmatched.append(key); continue }
            let rest = parts[3]
            var target: String?
            switch parts[0] {
            case "input_blocks" where i >= 1 && i <= inputSlots.count:
                let slot = inputSlots[i - 1]
                if let layer = slot.layer {
                    if j == 0 { target = resnet(rest).map { "down_blocks.\(slot.block).resnets.\(layer).\($0)" } }
                    if j == 1 { target = "down_blocks.\(slot.block).attentions.\(layer).\(rest)" }
                } else if j == 0, rest.hasPrefix("op.") {
                    target = "down_blocks.\(slot.block).downsamplers.0.conv.\(rest.dropFirst(3))"
                }
            case "middle_block":
                if j == 0 || j == 2 { target = resnet(rest).map { "mid_block.resnets.\(j / 2).\($0)" } }
                if j == 1 { target = "mid_block.attentions.0.\(rest)" }
            case "output_blocks" where i >= 0 && i < outputSlots.count:
                let slot = outputSlots[i]
                if j == 0 {
                    target = resnet(rest).map { "up_blocks.\(slot.block).resnets.\(slot.layer).\($0)" }
                } else if rest.hasPrefix("conv.") {
                    target = "up_blocks.\(slot.block).upsamplers.0.\(rest)"
                } else if j == 1 {
                    target = "up_blocks.\(slot.block).attentions.\(slot.layer).\(rest)"
                }
            default:
                break
            }
            if let target { sources[target] = .same(key) } else { unmatched.append(key) }
        }
        return (sources, unmatched)
    }

    /// The LDM resnet's sub-module names → diffusers `ResnetBlock2D` names.
    private static func resnet(_ rest: String) -> String? {
        let names = ["in_layers.0.": "norm1.", "in_layers.2.": "conv1.", "emb_layers.1.": "time_emb_proj.",
                     "out_layers.0.": "norm2.", "out_layers.3.": "conv2.", "skip_connection.": "conv_shortcut."]
        guard let (from, to) = names.first(where: { rest.hasPrefix($0.key) }) else { return nil }
        return to + rest.dropFirst(from.count)
    }

    /// VAE (`first_stage_model.*`): `down.i.block.j` / `up.i.block.j` (up blocks numbered from the bottom) / `mid`;
    /// the mid-block attention's 1×1 convolutions become linear layers. `blocks`: the number of down (= up) blocks.
    static func vae(_ keys: [String], prefix: String, blocks: Int, shapes: (String) -> [Int]?) -> Result {
        var sources: [String: MappedTensorStore.Source] = [:]
        var unmatched: [String] = []
        let attention = ["norm.": "group_norm.", "q.": "to_q.", "k.": "to_k.", "v.": "to_v.", "proj_out.": "to_out.0."]
        for key in keys {
            let name = String(key.dropFirst(prefix.count))
            var parts = name.split(separator: ".").map(String.init)
            if parts.count == 2, parts[0] == "quant_conv" || parts[0] == "post_quant_conv" {
                sources[name] = .same(key)
                continue
            }
            guard parts.count >= 3, parts[0] == "encoder" || parts[0] == "decoder" else { unmatched.append(key); continue }
            let side = parts[0]
            var target: String?
            switch parts[1] {
            case "conv_in", "conv_out":
                target = name
            case "norm_out":
                parts[1] = "conv_norm_out"
                target = parts.joined(separator: ".")
            case "down", "up":
                guard parts.count >= 5, let i = Int(parts[2]), i < blocks else { break }
                let index = parts[1] == "down" ? i : blocks - 1 - i
                let kind = parts[1] == "down" ? "down_blocks" : "up_blocks"
                let tail = parts[4...].joined(separator: ".")
                if parts[3] == "block", parts.count >= 6, let j = Int(parts[4]) {
                    target = "\(side).\(kind).\(index).resnets.\(j).\(vaeResnet(parts[5...].joined(separator: ".")))"
                } else if parts[3] == "downsample" || parts[3] == "upsample" {
                    target = "\(side).\(kind).\(index).\(parts[1] == "down" ? "downsamplers" : "upsamplers").0.\(tail)"
                }
            case "mid":
                let tail = parts[3...].joined(separator: ".")
                if parts[2] == "block_1" || parts[2] == "block_2" {
                    target = "\(side).mid_block.resnets.\(parts[2] == "block_1" ? 0 : 1).\(vaeResnet(tail))"
                } else if parts[2] == "attn_1", let (from, to) = attention.first(where: { tail.hasPrefix($0.key) }) {
                    let converted = "\(side).mid_block.attentions.0.\(to)\(tail.dropFirst(from.count))"
                    if let shape = shapes(key), shape.count == 4 {
                        sources[converted] = .reshaped(key, [shape[0], shape[1]])  // [C, C, 1, 1] → [C, C]
                        continue
                    }
                    target = converted
                }
            default:
                break
            }
            if let target { sources[target] = .same(key) } else { unmatched.append(key) }
        }
        return (sources, unmatched)
    }

    private static func vaeResnet(_ rest: String) -> String {
        rest.hasPrefix("nin_shortcut.") ? "conv_shortcut." + rest.dropFirst("nin_shortcut.".count) : rest
    }

    /// A transformers-layout CLIP text model (`cond_stage_model.transformer.*`,
    /// `conditioner.embedders.0.transformer.*`): the names are transformers' own, with or without the `text_model.`
    /// level older files lack; `position_ids` buffers are skipped.
    static func transformersCLIP(_ keys: [String], prefix: String) -> Result {
        var sources: [String: MappedTensorStore.Source] = [:]
        for key in keys where !key.hasSuffix("position_ids") {
            let name = String(key.dropFirst(prefix.count))
            sources[name.hasPrefix("text_model.") ? name : "text_model." + name] = .same(key)
        }
        return (sources, [])
    }

    /// An OpenCLIP text model (SDXL's `conditioner.embedders.1.model.*`): `transformer.resblocks.i` → encoder layers,
    /// the fused `attn.in_proj_*` split into q/k/v, `text_projection` transposed into a linear layer's weight.
    static func openCLIP(_ keys: [String], prefix: String) -> Result {
        var sources: [String: MappedTensorStore.Source] = [:]
        var unmatched: [String] = []
        let layerNames = ["ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "mlp.c_fc.": "mlp.fc1.",
                          "mlp.c_proj.": "mlp.fc2.", "attn.out_proj.": "self_attn.out_proj."]
        for key in keys {
            let name = String(key.dropFirst(prefix.count))
            switch name {
            case "token_embedding.weight": sources["text_model.embeddings.token_embedding.weight"] = .same(key)
            case "positional_embedding": sources["text_model.embeddings.position_embedding.weight"] = .same(key)
            case "ln_final.weight", "ln_final.bias":
                sources["text_model.final_layer_norm." + name.dropFirst("ln_final.".count)] = .same(key)
            case "text_projection": sources["text_projection.weight"] = .transposed(key)
            case "logit_scale": break  // the contrastive loss's temperature; not part of the text encoder
            default:
                let parts = name.split(separator: ".", maxSplits: 3).map(String.init)
                guard parts.count == 4, parts[0] == "transformer", parts[1] == "resblocks", let i = Int(parts[2]) else {
                    unmatched.append(key); continue
                }
                let layer = "text_model.encoder.layers.\(i)."
                let rest = parts[3]
                if rest == "attn.in_proj_weight" || rest == "attn.in_proj_bias" {
                    let kind = rest.hasSuffix("weight") ? "weight" : "bias"
                    for (part, projection) in ["q_proj", "k_proj", "v_proj"].enumerated() {
                        sources["\(layer)self_attn.\(projection).\(kind)"] = .slice(key, part: part, parts: 3)
                    }
                } else if let (from, to) = layerNames.first(where: { rest.hasPrefix($0.key) }) {
                    sources[layer + to + rest.dropFirst(from.count)] = .same(key)
                } else {
                    unmatched.append(key)
                }
            }
        }
        return (sources, unmatched)
    }
}

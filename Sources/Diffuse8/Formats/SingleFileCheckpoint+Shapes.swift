/// The shapes a configuration fixes, checked on a single-file checkpoint before any weight is read: the file has no
/// configuration of its own, so a checkpoint of another architecture (SD 2.x's 1024-wide text conditioning, an
/// inpainting UNet's 9 input channels, a pruned or distilled UNet) must be caught here with a message naming the key,
/// rather than deep inside a model with a diffusers name the user never saw.
///
/// Only what the tensor shapes can show is checked (channels, widths, depths, vocabulary, projection kind); the number
/// of attention heads, activations and scheduler settings are not visible in a checkpoint and come from the
/// configuration as they are.
extension SingleFileCheckpoint {
    /// One tensor whose shape (or absence, when `shape` is nil) follows from a configuration value.
    struct ShapeExpectation: Equatable {
        /// The key as stored in the file.
        let key: String
        let shape: [Int]?
        /// The configuration values that decide it, for the message.
        let reason: String
    }

    /// Checks the file against the configurations in `folder` (`described` names them in messages, e.g. "the SD1.x
    /// reference configurations (…)"). Throws one error listing up to four disagreements, each with the key, the
    /// shape found and the shape expected.
    public func checkShapes(against folder: DiffusersFolder, described: String, advice: String) throws {
        let unet = try UNetConfiguration(contentsOf: try folder.folder(of: "unet") + "/config.json")
        let names = family == .stableDiffusionXL ? ["text_encoder", "text_encoder_2"] : ["text_encoder"]
        let textEncoders = try names.map { try CLIPTextConfiguration(directory: try folder.folder(of: $0)) }
        let vae = try VAEConfiguration(directory: try folder.folder(of: "vae"))
        try check(shapeExpectations(unet: unet, textEncoders: textEncoders, vae: vae), described: described, advice: advice)
    }

    func check(_ expectations: [ShapeExpectation], described: String, advice: String) throws {
        var problems: [String] = []
        for expectation in expectations {
            let actual = try? file.entry(named: expectation.key).shape
            switch (expectation.shape, actual) {
            case let (expected?, actual?) where expected != actual:
                problems.append("'\(expectation.key)' has shape \(actual) where \(expected) is expected (\(expectation.reason))\(Self.hint(expectation.key, actual))")
            case (_?, nil):
                problems.append("'\(expectation.key)' is missing (\(expectation.reason))")
            case (nil, let actual?):
                problems.append("'\(expectation.key)' (shape \(actual)) is present but should not be (\(expectation.reason))")
            default:
                break
            }
        }
        guard !problems.isEmpty else { return }
        let shown = problems.prefix(4).joined(separator: "; ")
        throw DiffusersFolderError(path: path, "\(path) is an \(familyName) checkpoint whose tensors do not fit \(described): \(shown)"
                                   + "\(problems.count > 4 ? "; and \(problems.count - 4) more" : ""); \(advice)")
    }

    /// What a known other architecture looks like at this key, so the message can say what the file probably is.
    private static func hint(_ key: String, _ shape: [Int]) -> String {
        if key.hasSuffix("input_blocks.0.0.weight"), shape.count == 4, shape[1] == 9 {
            return " — 9 input channels: an inpainting model, which is not supported"
        }
        if key.contains(".attn2.to_k."), shape.count == 2, shape[1] == 1024 {
            return " — 1024-wide text conditioning: an SD 2.x UNet, which is not supported as a single file"
        }
        return ""
    }

    /// The tensors whose shapes the configurations decide, under the file's key names.
    func shapeExpectations(unet: UNetConfiguration, textEncoders: [CLIPTextConfiguration], vae: VAEConfiguration) -> [ShapeExpectation] {
        var list = unetExpectations(unet)
        for (index, configuration) in textEncoders.enumerated() where index < textEncoderPrefixes.count {
            list += textEncoderExpectations(configuration, prefix: textEncoderPrefixes[index].prefix, openCLIP: textEncoderPrefixes[index].openCLIP)
        }
        if file.tensorNames.contains(where: { $0.hasPrefix(Self.vaePrefix) }) { list += vaeExpectations(vae) }  // none: an error at load
        return list
    }

    private func unetExpectations(_ c: UNetConfiguration) -> [ShapeExpectation] {
        let p = Self.unetPrefix
        let channels = c.blockOutChannels
        let time = c.timeEmbeddingDim
        var list = [
            ShapeExpectation(key: p + "input_blocks.0.0.weight", shape: [channels[0], c.inChannels, 3, 3],
                             reason: "in_channels \(c.inChannels), block_out_channels[0] \(channels[0])"),
            ShapeExpectation(key: p + "out.2.weight", shape: [c.outChannels, channels[0], 3, 3],
                             reason: "out_channels \(c.outChannels), block_out_channels[0] \(channels[0])"),
            ShapeExpectation(key: p + "time_embed.0.weight", shape: [time, channels[0]], reason: "time embedding width \(time)"),
        ]
        if c.usesTextTimeEmbedding, let input = c.projectionClassEmbeddingsInputDim {
            list.append(ShapeExpectation(key: p + "label_emb.0.0.weight", shape: [time, input],
                                         reason: "addition_embed_type text_time, projection_class_embeddings_input_dim \(input)"))
        } else {
            list.append(ShapeExpectation(key: p + "label_emb.0.0.weight", shape: nil, reason: "the configuration has no addition embedding"))
        }
        func transformer(_ base: String, width: Int, context: Int, depth: Int) {
            list.append(ShapeExpectation(key: base + "proj_in.weight", shape: c.useLinearProjection ? [width, width] : [width, width, 1, 1],
                                         reason: "use_linear_projection \(c.useLinearProjection)"))
            list.append(ShapeExpectation(key: base + "transformer_blocks.\(depth - 1).attn2.to_k.weight", shape: [width, context],
                                         reason: "cross_attention_dim \(context), \(depth) transformer layer(s) of width \(width)"))
            list.append(ShapeExpectation(key: base + "transformer_blocks.\(depth).attn2.to_k.weight", shape: nil,
                                         reason: "transformer_layers_per_block \(depth)"))
        }
        var index = 1  // input_blocks.0 is conv_in
        for block in channels.indices {
            if c.downBlockTypes[block] == .crossAttention {
                transformer(p + "input_blocks.\(index).1.", width: channels[block], context: c.crossAttentionDim[block],
                            depth: c.transformerLayersPerBlock[block])
            }
            index += c.layersPerBlock[block] + (block < channels.count - 1 ? 1 : 0)
        }
        transformer(p + "middle_block.1.", width: channels.last!, context: c.crossAttentionDim.last!, depth: c.transformerLayersPerBlock.last!)
        return list
    }

    private func textEncoderExpectations(_ c: CLIPTextConfiguration, prefix: String, openCLIP: Bool) -> [ShapeExpectation] {
        let width = "hidden_size \(c.hiddenSize)"
        if openCLIP {
            var list = [
                ShapeExpectation(key: prefix + "token_embedding.weight", shape: [c.vocabSize, c.hiddenSize], reason: "vocab_size \(c.vocabSize), \(width)"),
                ShapeExpectation(key: prefix + "positional_embedding", shape: [c.maxPositionEmbeddings, c.hiddenSize],
                                 reason: "max_position_embeddings \(c.maxPositionEmbeddings), \(width)"),
                ShapeExpectation(key: prefix + "transformer.resblocks.\(c.numHiddenLayers - 1).mlp.c_fc.weight", shape: [c.intermediateSize, c.hiddenSize],
                                 reason: "num_hidden_layers \(c.numHiddenLayers), intermediate_size \(c.intermediateSize)"),
                ShapeExpectation(key: prefix + "transformer.resblocks.\(c.numHiddenLayers).mlp.c_fc.weight", shape: nil,
                                 reason: "num_hidden_layers \(c.numHiddenLayers)"),
            ]
            if c.architecture == .textModelWithProjection {
                list.append(ShapeExpectation(key: prefix + "text_projection", shape: [c.hiddenSize, c.projectionDim],
                                             reason: "projection_dim \(c.projectionDim)"))
            }
            return list
        }
        // transformers layout, with or without the `text_model.` level
        let model = file.tensorNames.contains { $0.hasPrefix(prefix + "text_model.") } ? prefix + "text_model." : prefix
        return [
            ShapeExpectation(key: model + "embeddings.token_embedding.weight", shape: [c.vocabSize, c.hiddenSize], reason: "vocab_size \(c.vocabSize), \(width)"),
            ShapeExpectation(key: model + "embeddings.position_embedding.weight", shape: [c.maxPositionEmbeddings, c.hiddenSize],
                             reason: "max_position_embeddings \(c.maxPositionEmbeddings), \(width)"),
            ShapeExpectation(key: model + "encoder.layers.\(c.numHiddenLayers - 1).mlp.fc1.weight", shape: [c.intermediateSize, c.hiddenSize],
                             reason: "num_hidden_layers \(c.numHiddenLayers), intermediate_size \(c.intermediateSize)"),
            ShapeExpectation(key: model + "encoder.layers.\(c.numHiddenLayers).mlp.fc1.weight", shape: nil, reason: "num_hidden_layers \(c.numHiddenLayers)"),
        ]
    }

    private func vaeExpectations(_ c: VAEConfiguration) -> [ShapeExpectation] {
        let p = Self.vaePrefix
        let first = c.blockOutChannels[0], last = c.blockOutChannels.last!
        let channels = "block_out_channels \(c.blockOutChannels)"
        return [
            ShapeExpectation(key: p + "encoder.conv_in.weight", shape: [first, c.inChannels, 3, 3], reason: "in_channels \(c.inChannels), \(channels)"),
            ShapeExpectation(key: p + "encoder.conv_out.weight", shape: [2 * c.latentChannels, last, 3, 3], reason: "latent_channels \(c.latentChannels), \(channels)"),
            ShapeExpectation(key: p + "decoder.conv_in.weight", shape: [last, c.latentChannels, 3, 3], reason: "latent_channels \(c.latentChannels), \(channels)"),
            ShapeExpectation(key: p + "decoder.conv_out.weight", shape: [c.outChannels, first, 3, 3], reason: "out_channels \(c.outChannels), \(channels)"),
        ]
    }
}

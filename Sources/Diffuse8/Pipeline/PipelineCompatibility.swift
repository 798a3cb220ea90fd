/// Checks that a folder's components fit together before anything runs: each `config.json` can be valid on its
/// own and still describe parts of different models (a text encoder narrower than the UNet's cross-attention, a
/// tokenizer whose ids pass the embedding table, a VAE with another latent width). Every error names both sides.
enum PipelineCompatibility {
    /// One text encoder with its tokenizer and where they were loaded from.
    struct TextSide {
        let tokenizer: CLIPTokenizer
        let tokenizerFolder: String
        let configuration: CLIPTextConfiguration
        let encoderFolder: String
    }

    /// Checks a loaded folder's components (`encoders` in `text_encoder`, `text_encoder_2` order).
    static func check(_ folder: DiffusersFolder, encoders: [TextConditioning.Encoder], unet: UNetConfiguration,
                      vae: VAEConfiguration) throws {
        let names = [("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")]
        let text = try zip(encoders, names).map { encoder, name in
            TextSide(tokenizer: encoder.tokenizer, tokenizerFolder: try folder.folder(of: name.0),
                     configuration: encoder.model.configuration, encoderFolder: try folder.folder(of: name.1))
        }
        try check(family: folder.family, text: text, unet: unet, unetFolder: try folder.folder(of: "unet"),
                  vae: vae, vaeFolder: try folder.folder(of: "vae"))
    }

    static func check(family: ModelFamily, text: [TextSide], unet: UNetConfiguration, unetFolder: String,
                      vae: VAEConfiguration, vaeFolder: String) throws {
        guard unet.inChannels == vae.latentChannels, unet.outChannels == vae.latentChannels else {
            throw PipelineError("\(vaeFolder)/config.json has latent_channels \(vae.latentChannels), but \(unetFolder)/config.json has "
                                + "in_channels \(unet.inChannels) and out_channels \(unet.outChannels); they must all be equal")
        }
        for side in text {
            let largest = side.tokenizer.largestID
            guard largest < side.configuration.vocabSize else {
                throw PipelineError("\(side.tokenizerFolder) produces token ids up to \(largest), but \(side.encoderFolder)/config.json "
                                    + "has vocab_size \(side.configuration.vocabSize) embedding rows; the tokenizer belongs to another text encoder")
            }
            guard side.tokenizer.contextLength <= side.configuration.maxPositionEmbeddings else {
                throw PipelineError("\(side.tokenizerFolder) pads prompts to \(side.tokenizer.contextLength) tokens (model_max_length), but "
                                    + "\(side.encoderFolder)/config.json has max_position_embeddings \(side.configuration.maxPositionEmbeddings)")
            }
        }
        // SD1.x/2.x condition on the one encoder's hidden states; SDXL on both, concatenated.
        let width = text.map(\.configuration.hiddenSize).reduce(0, +)
        let encoders = text.map(\.encoderFolder).joined(separator: " + ")
        guard unet.crossAttentionDim.allSatisfy({ $0 == width }) else {
            throw PipelineError("\(unetFolder)/config.json has cross_attention_dim \(unet.crossAttentionDim[0]), but the text encoder "
                                + "output (\(encoders), hidden_size) is \(width) wide; the components come from different models")
        }
        switch (family, unet.usesTextTimeEmbedding) {
        case (.stableDiffusionXL, false):
            throw PipelineError("\(unetFolder)/config.json has no addition_embed_type \"text_time\", which an SDXL pipeline's UNet needs")
        case (.stableDiffusion, true):
            throw PipelineError("\(unetFolder)/config.json has addition_embed_type \"text_time\" (an SDXL UNet) in an SD1.x/2.x pipeline")
        case (.stableDiffusionXL, true):
            // add_embedding reads the pooled, projected text (second encoder) and 6 time ids.
            if let pooled = text.last?.configuration, let timeWidth = unet.additionTimeEmbedDim,
               let input = unet.projectionClassEmbeddingsInputDim {
                let expected = pooled.projectionDim + 6 * timeWidth
                guard input == expected else {
                    throw PipelineError("\(unetFolder)/config.json has projection_class_embeddings_input_dim \(input), but "
                                        + "\(text.last!.encoderFolder) projection_dim \(pooled.projectionDim) + 6 × addition_time_embed_dim "
                                        + "\(timeWidth) = \(expected)")
                }
            }
        case (.stableDiffusion, false):
            break
        }
        if let sampleSize = unet.sampleSize, sampleSize * vae.downscaleFactor > ModelLimits.maximumImageSide {
            throw PipelineError("\(unetFolder)/config.json sample_size \(sampleSize) × the VAE's factor \(vae.downscaleFactor) is more than "
                                + "\(ModelLimits.maximumImageSide) pixels")
        }
    }
}

extension StableDiffusionPipeline {
    /// Throws unless `other` (a quantized folder made from this pipeline's model) has the same architecture: the
    /// same UNet, VAE and text encoder configurations, and — when its recipe records one — the fingerprint of this
    /// model's UNet. `eval` compares images of both pixel for pixel and runs them on the same latents.
    public func requireSameModel(_ other: StableDiffusionPipeline, otherPath: String, path: String) throws {
        let mine = noisePredictor.configuration, theirs = other.noisePredictor.configuration
        guard folder.family == other.folder.family, mine == theirs else {
            throw PipelineError("\(otherPath) is not made from \(path): its UNet configuration differs (\(other.folder.family), "
                                + "block_out_channels \(theirs.blockOutChannels) vs \(folder.family), \(mine.blockOutChannels)); "
                                + "quantize \(path) itself or evaluate against the model it came from")
        }
        guard decoder.configuration == other.decoder.configuration,
              conditioning.encoders.map(\.model.configuration) == other.conditioning.encoders.map(\.model.configuration) else {
            throw PipelineError("\(otherPath) is not made from \(path): its VAE or text encoder configuration differs")
        }
        let unetFolder = try other.folder.folder(of: "unet")
        if let fingerprint = try QuantizedModelFolder.manifest(unetDirectory: unetFolder)?.modelFingerprint, let unet {
            let expected = ModelFingerprint.of(unet)
            guard fingerprint == expected else {
                throw PipelineError("\(otherPath) was quantized from another model (fingerprint \(fingerprint); \(path) is \(expected)); "
                                    + "evaluate it against the model it was made from")
            }
        }
    }
}

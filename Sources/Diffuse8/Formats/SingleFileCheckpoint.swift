#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A whole Stable Diffusion model in one `.safetensors` file with the original key names — what most SD1.x and
/// SDXL downloads are: the LDM layout (`model.diffusion_model.*` UNet, `first_stage_model.*` VAE,
/// `cond_stage_model.transformer.*` CLIP) and SDXL's SGM layout (`conditioner.embedders.0.transformer.*` CLIP ViT-L,
/// `conditioner.embedders.1.model.*` OpenCLIP ViT-bigG). The family is read from the keys; the tensors are exposed
/// under diffusers names (`LDMKeyMapping`), converted from their stored type (F32, F16, BF16, F8_E4M3 as ComfyUI's
/// fp8 checkpoints store them) when a model reads them.
///
/// The file has no configurations, tokenizers or scheduler settings: like diffusers' `from_single_file`, the pipeline
/// takes them from the family's reference model (`ReferenceConfigurations`), or from a diffusers folder of the same
/// family when one is given (`from_single_file(config=…)`), after checking the file's shapes against them
/// (`checkShapes(against:described:advice:)`). EMA copies (`model_ema.*`) and the DDPM schedule buffers
/// are skipped (the non-EMA weights are used, as diffusers does by default). Not supported: SD 2.x (OpenCLIP ViT-H)
/// and the SDXL refiner; their files get an error saying so.
public final class SingleFileCheckpoint: @unchecked Sendable {
    public let path: String
    public let family: ModelFamily
    let file: SafetensorsFile

    /// The family as single files have it, for messages: "SD1.x" or "SDXL" (SD 2.x single files are refused).
    public var familyName: String { family == .stableDiffusionXL ? "SDXL" : "SD1.x" }

    static let unetPrefix = "model.diffusion_model."
    static let vaePrefix = "first_stage_model."

    /// Prefixes of the text encoders, in `text_encoder`, `text_encoder_2` order, and whether each is OpenCLIP.
    var textEncoderPrefixes: [(prefix: String, openCLIP: Bool)] {
        family == .stableDiffusionXL
            ? [("conditioner.embedders.0.transformer.", false), ("conditioner.embedders.1.model.", true)]
            : [("cond_stage_model.transformer.", false)]
    }

    /// Keys real checkpoints carry that are not weights of the three networks.
    static func isIgnored(_ key: String) -> Bool {
        let buffers: Set<String> = [
            "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
            "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
            "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights",
        ]
        return buffers.contains(key) || key.hasPrefix("model_ema.") || key.hasPrefix("denoiser.")
            || key.hasPrefix("first_stage_model.loss.")
    }

    /// Opens `path` and reads the family from its keys. Throws an error naming the file and the keys that decided
    /// (or a few of the keys found) when the file is not a checkpoint of a supported family.
    public convenience init(path: String) throws {
        try self.init(file: SafetensorsFile(path: path))
    }

    /// The checkpoint in an opened safetensors file (named in errors by its path).
    init(file: SafetensorsFile) throws {
        path = file.path
        self.file = file
        let keys = file.tensorNames
        func has(_ prefix: String) -> Bool { keys.contains { $0.hasPrefix(prefix) } }
        func sample() -> String {
            let shown = keys.prefix(6).map { "'\($0)'" }.joined(separator: ", ")
            return keys.isEmpty ? "it holds no tensors" : "its first keys: \(shown)\(keys.count > 6 ? ", …" : "")"
        }
        if has("lora_unet_") || has("lora_te") || keys.contains(where: { $0.contains(".lora_down.") || $0.contains(".lora_A.") }) {
            throw DiffusersFolderError(path: path, "\(path) is a LoRA, not a model checkpoint (\(sample())); load a model with --model and the LoRA with --lora")
        }
        guard has(Self.unetPrefix) else {
            if has("down_blocks.") || has("text_model.") {
                throw DiffusersFolderError(path: path, "\(path) holds one component in diffusers naming (\(sample())), not a whole checkpoint; give the diffusers folder instead")
            }
            throw DiffusersFolderError(path: path, "\(path) is not a Stable Diffusion checkpoint of a known family: no '\(Self.unetPrefix)*' UNet keys (\(sample()))")
        }
        if has("conditioner.embedders.1.model.") && has("conditioner.embedders.0.transformer.") {
            family = .stableDiffusionXL
        } else if has("conditioner.embedders.0.model.") {
            throw DiffusersFolderError(path: path, "\(path) is an SDXL refiner checkpoint (OpenCLIP 'conditioner.embedders.0.model.*' only); the refiner is not supported")
        } else if has("cond_stage_model.model.") {
            throw DiffusersFolderError(path: path, "\(path) is an SD 2.x checkpoint (OpenCLIP 'cond_stage_model.model.*'); SD 2.x single files are not supported — use a diffusers folder")
        } else if has("cond_stage_model.transformer.") {
            family = .stableDiffusion
        } else {
            throw DiffusersFolderError(path: path, "\(path) has UNet keys but no text encoder of a known family (expected 'cond_stage_model.transformer.*' for SD1.x or 'conditioner.embedders.*' for SDXL; \(sample()))")
        }
        let known = [Self.unetPrefix, Self.vaePrefix] + textEncoderPrefixes.map(\.prefix)
        let unexpected = keys.filter { key in !Self.isIgnored(key) && !known.contains { key.hasPrefix($0) } }
        if !unexpected.isEmpty { throw error(unexpected: unexpected, in: "the file") }
    }

    /// Whether `path` names a file (not a folder) — a single-file checkpoint rather than a diffusers folder.
    public static func isFile(_ path: String) -> Bool {
        var isDirectory = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory
    }

    /// The UNet's weights under diffusers names, for a UNet with `layersPerBlock` resnets per down block.
    public func unetWeights(layersPerBlock: [Int]) throws -> TensorStore {
        try store(LDMKeyMapping.unet(keys(Self.unetPrefix), prefix: Self.unetPrefix, layersPerBlock: layersPerBlock), "UNet")
    }

    /// The VAE's weights under diffusers names, for a VAE with `blocks` down (and up) blocks.
    public func vaeWeights(blocks: Int) throws -> TensorStore {
        let keys = keys(Self.vaePrefix)
        guard !keys.isEmpty else {
            throw DiffusersFolderError(path: path, "\(path) has no VAE ('\(Self.vaePrefix)*' keys); this checkpoint needs a separate VAE")
        }
        return try store(LDMKeyMapping.vae(keys, prefix: Self.vaePrefix, blocks: blocks,
                                           shapes: { try? self.file.entry(named: $0).shape }), "VAE")
    }

    /// Text encoder `index` (0: `text_encoder`, 1: SDXL's `text_encoder_2`) under transformers names.
    public func textEncoderWeights(index: Int) throws -> TensorStore {
        let (prefix, openCLIP) = textEncoderPrefixes[index]
        let keys = keys(prefix)
        let mapped = openCLIP ? LDMKeyMapping.openCLIP(keys, prefix: prefix) : LDMKeyMapping.transformersCLIP(keys, prefix: prefix)
        return try store(mapped, "text encoder \(index + 1)")
    }

    private func keys(_ prefix: String) -> [String] { file.tensorNames.filter { $0.hasPrefix(prefix) && !Self.isIgnored($0) } }

    private func store(_ mapped: LDMKeyMapping.Result, _ component: String) throws -> TensorStore {
        if !mapped.unmatched.isEmpty { throw error(unexpected: mapped.unmatched, in: "the \(component)") }
        return MappedTensorStore(base: file, sources: mapped.sources)
    }

    private func error(unexpected: [String], in part: String) -> DiffusersFolderError {
        let shown = unexpected.prefix(8).map { "'\($0)'" }.joined(separator: ", ")
        return DiffusersFolderError(path: path, "\(path): \(unexpected.count) unexpected key(s) in \(part) of this \(family) checkpoint: "
                                    + "\(shown)\(unexpected.count > 8 ? ", …" : ""); the file is not in the LDM/SGM layout this reader knows")
    }

    /// Runs `load` and adds where the weights came from to a weight error (a missing or misshapen tensor).
    func loading<T>(_ component: String, prefix: String, _ load: () throws -> T) throws -> T {
        do {
            return try load()
        } catch let error as ComponentWeightsError {
            throw DiffusersFolderError(path: path, "\(path) (\(component), keys '\(prefix)*' converted to diffusers names): \(error.description)")
        }
    }
}

extension SingleFileCheckpoint {
    /// The UNet, with the configuration of the diffusers `unet/` folder `configDirectory`.
    public func loadUNet(configDirectory: String) throws -> UNet2DConditionModel {
        let configuration = try UNetConfiguration(contentsOf: configDirectory + "/config.json")
        return try loading("UNet", prefix: Self.unetPrefix) {
            try UNet2DConditionModel(configuration: configuration, weights: unetWeights(layersPerBlock: configuration.layersPerBlock))
        }
    }

    /// The VAE, with the configuration of the diffusers `vae/` folder `configDirectory`.
    public func loadVAE(configDirectory: String) throws -> AutoencoderKL {
        let configuration = try VAEConfiguration(directory: configDirectory)
        return try loading("VAE", prefix: Self.vaePrefix) {
            try AutoencoderKL(configuration: configuration, weights: vaeWeights(blocks: configuration.blockOutChannels.count))
        }
    }

    /// Text encoder `index` (0 or, for SDXL, 1), with the configuration of the transformers folder `configDirectory`.
    public func loadTextEncoder(index: Int, configDirectory: String) throws -> CLIPTextModel {
        let configuration = try CLIPTextConfiguration(directory: configDirectory)
        return try loading("text encoder \(index + 1)", prefix: textEncoderPrefixes[index].prefix) {
            try CLIPTextModel(configuration: configuration, weights: textEncoderWeights(index: index))
        }
    }
}

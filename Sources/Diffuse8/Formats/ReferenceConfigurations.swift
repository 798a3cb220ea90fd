#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The configurations a single-file checkpoint is loaded with when no configuration folder is given: for each
/// supported family, a diffusers folder without weights holding the published configurations of the reference model
/// of that family — the ones diffusers' `from_single_file` fetches for a checkpoint of that type:
///
/// - SD1.x: `stable-diffusion-v1-5/stable-diffusion-v1-5` (UNet, CLIP ViT-L/14 text encoder, AutoencoderKL,
///   PNDM scheduler settings, tokenizer);
/// - SDXL: `stabilityai/stable-diffusion-xl-base-1.0` (UNet, CLIP ViT-L and OpenCLIP ViT-bigG-with-projection text
///   encoders, VAE, Euler scheduler settings, both tokenizers).
///
/// The tokenizer folders hold only their settings; the BPE vocabulary both families share is `CLIPVocabulary`.
/// Found like `DefaultModel`: the `DIFFUSE8_REFERENCE_CONFIGS` environment variable (a folder holding the family
/// folders), else `models/configs` of this repository.
public enum ReferenceConfigurations {
    public static let environmentVariable = "DIFFUSE8_REFERENCE_CONFIGS"

    /// The folder name of `family`'s reference configurations (the reference model's Hugging Face name).
    public static func name(of family: ModelFamily) -> String {
        family == .stableDiffusionXL ? "stable-diffusion-xl-base-1.0" : "stable-diffusion-v1-5"
    }

    /// The reference model's name for messages: "SD 1.5 (stable-diffusion-v1-5)".
    public static func label(of family: ModelFamily) -> String {
        (family == .stableDiffusionXL ? "SDXL base 1.0" : "SD 1.5") + " (\(name(of: family)))"
    }

    /// The folder holding the family folders.
    public static var root: String {
        if let fromEnvironment = ProcessInfo.processInfo.environment[environmentVariable], !fromEnvironment.isEmpty {
            return fromEnvironment.count > 1 && fromEnvironment.hasSuffix("/") ? String(fromEnvironment.dropLast()) : fromEnvironment
        }
        return DefaultModel.repositoryRoot + "/models/configs"
    }

    /// The reference configuration folder of `family`; throws when it is missing.
    public static func folder(for family: ModelFamily) throws -> String {
        let path = root + "/" + name(of: family)
        guard FileManager.default.fileExists(atPath: path + "/model_index.json") else {
            throw PipelineError("the \(family) reference configurations are missing (no \(path)/model_index.json); "
                                + "set \(environmentVariable) to the folder holding '\(name(of: family))', or give the model's "
                                + "diffusers folder with --config DIR")
        }
        return path
    }
}

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Finds and opens the safetensors weights of one diffusers component folder (`unet/`, `vae/`,
/// `text_encoder/`, ...) the way diffusers' and transformers' `from_pretrained` name them:
/// `diffusion_pytorch_model.safetensors` or `model.safetensors`, the sharded
/// `<stem>.safetensors.index.json`, and the variant files `<stem>.<variant>.safetensors` /
/// `<stem>.safetensors.index.<variant>.json`. The one place that knows these names: `DiffusersFolder`
/// and every model's `load(directory:)` use it.
///
/// Without a variant the plain files are preferred and the `fp16` variant is used only when nothing
/// else is there; with one, the variant is preferred. As a last resort a folder holding exactly one
/// `.safetensors` file uses it. Limitations: only safetensors (a folder with only `.bin` files gets an
/// error saying how to convert them).
public enum ComponentWeights {
    /// Weight stems diffusers (`diffusion_pytorch_model`) and transformers (`model`) save under.
    static let stems = ["diffusion_pytorch_model", "model"]

    /// The file names looked for, in order of preference.
    public static func candidates(variant: String? = nil) -> [String] {
        let plain = stems.flatMap { ["\($0).safetensors", "\($0).safetensors.index.json"] }
        func variantFiles(_ v: String) -> [String] { stems.flatMap { ["\($0).\(v).safetensors", "\($0).safetensors.index.\(v).json"] } }
        return variant.map { variantFiles($0) + plain } ?? (plain + variantFiles("fp16"))
    }

    /// The weight file to use in `directory`: a single `.safetensors` file or a `.safetensors.index.json`.
    /// Throws a `DiffusersFolderError` naming the folder, what was looked for and what is there.
    public static func path(directory: String, variant: String? = nil) throws -> String {
        let candidates = candidates(variant: variant)
        for file in candidates where FileManager.default.fileExists(atPath: directory + "/" + file) {
            return directory + "/" + file
        }
        let present = (try? FileManager.default.contentsOfDirectory(atPath: directory))?.sorted() ?? []
        let safetensors = present.filter { $0.hasSuffix(".safetensors") }
        if safetensors.count == 1 { return directory + "/" + safetensors[0] }
        var advice = "the download is incomplete or the weights are in another format"
        if safetensors.count > 1 {
            advice = "several .safetensors files but none with a standard name and no index; keep only the one to use"
        } else if present.contains(where: { $0.hasSuffix(".bin") }) {
            advice = "only PyTorch .bin weights are there; convert them to safetensors (load and save_pretrained with safe_serialization=True)"
        }
        throw DiffusersFolderError(path: directory, "\(directory) has no safetensors weights (looked for \(candidates.joined(separator: ", ")); found: \(present.joined(separator: ", "))); \(advice)")
    }

    /// The weights of the component in `directory`, memory-mapped (see `path(directory:variant:)`).
    public static func open(directory: String, variant: String? = nil) throws -> any SafetensorsStore {
        let path = try path(directory: directory, variant: variant)
        return path.hasSuffix(".json") ? try ShardedSafetensors(indexPath: path) : try SafetensorsFile(path: path)
    }
}

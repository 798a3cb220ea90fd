#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The model families a diffusers folder can hold, read from `model_index.json`'s `_class_name`.
public enum ModelFamily: String, Sendable, CustomStringConvertible {
    /// `StableDiffusionPipeline`: SD 1.x and 2.x (one CLIP text encoder).
    case stableDiffusion = "SD1.x/2.x"
    /// `StableDiffusionXLPipeline`: SDXL base (two text encoders, text_time conditioning).
    case stableDiffusionXL = "SDXL"

    public var description: String { rawValue }

    /// Pipeline class names accepted for each family.
    public static let pipelineClasses: [String: ModelFamily] = [
        "StableDiffusionPipeline": .stableDiffusion,
        "StableDiffusionXLPipeline": .stableDiffusionXL,
    ]
}

/// A diffusers folder could not be used. The description names the path and says what to do.
public struct DiffusersFolderError: Error, CustomStringConvertible, Sendable {
    /// The file or folder concerned.
    public let path: String
    public let description: String

    public init(path: String, _ description: String) {
        self.path = path
        self.description = description
    }
}

/// A pipeline saved by diffusers' `save_pretrained`: `model_index.json` plus one folder per component
/// (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`, ...), each with its config and weights.
///
/// `model_index.json` maps component names to `[library, class]` (`[null, null]` for an absent
/// component such as a disabled safety checker). Weights are found by `ComponentWeights`, the way
/// diffusers' `from_pretrained` finds safetensors weights: `diffusion_pytorch_model.safetensors` or
/// `model.safetensors`, the `.fp16` variant, or a sharded `*.safetensors.index.json`.
///
/// Limitations: only safetensors weights (a folder with only `.bin` files gets an error saying so);
/// only the pipeline classes in `ModelFamily.pipelineClasses`.
public final class DiffusersFolder: @unchecked Sendable {
    /// One non-null entry of `model_index.json`.
    public struct Component: Sendable, Equatable {
        public let name: String
        /// `diffusers` or `transformers`.
        public let library: String
        /// e.g. `UNet2DConditionModel`, `CLIPTextModel`, `EulerDiscreteScheduler`.
        public let className: String

        /// Whether this component carries weights (models do; schedulers and tokenizers do not).
        public var hasWeights: Bool {
            !["Scheduler", "Tokenizer", "FeatureExtractor", "ImageProcessor"].contains { className.hasSuffix($0) }
        }
    }

    public let path: String
    /// `_class_name` of `model_index.json`.
    public let pipelineClass: String
    public let family: ModelFamily
    /// The whole `model_index.json` (for flags such as `force_zeros_for_empty_prompt`).
    public let index: JSONValue
    /// Non-null components, by name.
    public let components: [String: Component]
    /// Components listed as `[null, null]`.
    public let nullComponents: Set<String>

    public init(path: String) throws {
        let path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        self.path = path
        var isDirectory = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DiffusersFolderError(path: path, "\(path) does not exist; give the path of a diffusers model folder (the one holding model_index.json)")
        }
        guard isDirectory else {
            throw DiffusersFolderError(path: path, "\(path) is a file, not a diffusers folder; a single-file checkpoint is loaded with the pipeline (generate --model FILE)")
        }
        let indexPath = path + "/model_index.json"
        let index = try Self.readJSON(indexPath, missing: "\(path) has no model_index.json, so it is not a diffusers pipeline folder; point at the folder that holds model_index.json")
        guard index.object != nil else {
            throw DiffusersFolderError(path: indexPath, "\(indexPath) is not a JSON object")
        }
        guard let className = index["_class_name"]?.string else {
            throw DiffusersFolderError(path: indexPath, "\(indexPath) has no \"_class_name\" string naming the pipeline")
        }
        guard let family = ModelFamily.pipelineClasses[className] else {
            let known = ModelFamily.pipelineClasses.keys.sorted().joined(separator: ", ")
            throw DiffusersFolderError(path: indexPath, "\(indexPath): pipeline class '\(className)' is not supported (supported: \(known))")
        }
        var components: [String: Component] = [:]
        var nullComponents: Set<String> = []
        for (name, value) in index.object! where !name.hasPrefix("_") {
            guard let pair = value.array else { continue }  // flags such as requires_safety_checker
            guard pair.count == 2 else {
                throw DiffusersFolderError(path: indexPath, "\(indexPath): component '\(name)' should be [library, class], got \(pair.count) items")
            }
            if pair[0].isNull || pair[1].isNull { nullComponents.insert(name); continue }
            guard let library = pair[0].string, let componentClass = pair[1].string else {
                throw DiffusersFolderError(path: indexPath, "\(indexPath): component '\(name)' should be [library, class] strings")
            }
            components[name] = Component(name: name, library: library, className: componentClass)
        }
        self.pipelineClass = className
        self.family = family
        self.index = index
        self.components = components
        self.nullComponents = nullComponents
    }

    /// Names of the non-null components, sorted.
    public var componentNames: [String] { components.keys.sorted() }

    /// The component `name`; throws when `model_index.json` does not list it or lists it as null.
    public func component(_ name: String) throws -> Component {
        if let component = components[name] { return component }
        let indexPath = path + "/model_index.json"
        if nullComponents.contains(name) {
            throw DiffusersFolderError(path: indexPath, "\(indexPath) sets component '\(name)' to null, but this \(family) pipeline needs it")
        }
        throw DiffusersFolderError(path: indexPath, "\(indexPath) lists no component '\(name)' (it has: \(componentNames.joined(separator: ", "))); a \(family) pipeline needs it")
    }

    /// The component's folder, which must exist.
    public func folder(of name: String) throws -> String {
        _ = try component(name)
        let folder = path + "/" + name
        var isDirectory = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory else {
            throw DiffusersFolderError(path: folder, "component folder \(folder) is missing although model_index.json lists '\(name)'; the download is incomplete — fetch that folder")
        }
        return folder
    }

    /// The component's `config.json` (`scheduler_config.json` for schedulers, `tokenizer_config.json`
    /// for tokenizers), parsed.
    public func config(of name: String) throws -> JSONValue {
        let folder = try folder(of: name)
        let candidates = ["config.json", "scheduler_config.json", "tokenizer_config.json"]
        for file in candidates where FileManager.default.fileExists(atPath: folder + "/" + file) {
            return try Self.readJSON(folder + "/" + file, missing: "")
        }
        throw DiffusersFolderError(path: folder, "\(folder) has no \(candidates.joined(separator: " or ")); the component's configuration is missing")
    }

    /// The weight file to use: a single `.safetensors` file or a `.safetensors.index.json`, found by
    /// `ComponentWeights.path(directory:variant:)` in the component's folder.
    public func weightsPath(of name: String, variant: String? = nil) throws -> String {
        try ComponentWeights.path(directory: folder(of: name), variant: variant)
    }

    /// The component's weights, memory-mapped (`ComponentWeights.open(directory:variant:)`).
    public func weights(of name: String, variant: String? = nil) throws -> any SafetensorsStore {
        try ComponentWeights.open(directory: folder(of: name), variant: variant)
    }

    /// Class, parameter count and stored dtypes of every component.
    public func summary() throws -> ModelSummary {
        var rows: [ModelSummary.Component] = []
        for name in componentNames {
            let component = components[name]!
            guard component.hasWeights else {
                rows.append(ModelSummary.Component(name: name, library: component.library, className: component.className,
                                                   parameterCount: nil, byteCount: nil, dtypes: [], weightFiles: []))
                continue
            }
            let store = try weights(of: name)
            var count = 0, bytes = 0
            var dtypes: Set<SafetensorsDType> = []
            for tensor in store.tensorNames {
                let entry = try store.entry(named: tensor)
                count += entry.elementCount
                bytes += entry.byteCount
                dtypes.insert(entry.dtype)
            }
            rows.append(ModelSummary.Component(
                name: name, library: component.library, className: component.className, parameterCount: count,
                byteCount: bytes, dtypes: dtypes.sorted { $0.rawValue < $1.rawValue }, weightFiles: store.files))
        }
        return ModelSummary(path: path, pipelineClass: pipelineClass, family: family, components: rows)
    }

    private static func readJSON(_ path: String, missing: String) throws -> JSONValue {
        guard let data = InputFile.contents(atPath: path) else {
            throw DiffusersFolderError(path: path, missing.isEmpty ? "cannot read \(path)" : missing)
        }
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw DiffusersFolderError(path: path, "\(path) is not valid JSON (\(error)); the file is damaged")
        }
    }
}

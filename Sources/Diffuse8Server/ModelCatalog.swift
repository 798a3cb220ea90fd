import Diffuse8
import Foundation

/// The models a server can switch among: the subfolders of `--models-dir` that are diffusers folders
/// (`model_index.json`; quantized folders too) and its single-file SD1.x/SDXL `.safetensors` checkpoints (named by
/// file name, as A1111 names them), or the one `--model` folder or file.
public struct ModelCatalog: Sendable {
    public struct Entry: Sendable, Equatable {
        /// Folder name; the A1111 `title` and `model_name`.
        public var name: String
        public var path: String
    }

    public private(set) var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    /// The diffusers folders and single-file checkpoints directly inside `directory`, sorted by name (a
    /// `.safetensors` file that is not a checkpoint of a known family, such as a LoRA, is left out). Throws when
    /// there are none.
    public static func scan(directory: String) throws -> ModelCatalog {
        let fm = FileManager.default
        let base = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        guard let names = try? fm.contentsOfDirectory(atPath: base) else {
            throw ServerError("--models-dir \(directory): cannot list the folder")
        }
        let entries = names.sorted()
            .filter { fm.fileExists(atPath: "\(base)/\($0)/model_index.json")
                || ($0.hasSuffix(".safetensors") && (try? SingleFileCheckpoint(path: "\(base)/\($0)")) != nil) }
            .map { Entry(name: $0, path: "\(base)/\($0)") }
        guard !entries.isEmpty else {
            throw ServerError("--models-dir \(directory): no diffusers folder (a subfolder with model_index.json) or single-file checkpoint (.safetensors) inside")
        }
        return ModelCatalog(entries: entries)
    }

    /// One model folder.
    public static func single(path: String) -> ModelCatalog {
        let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
        let name = trimmed.split(separator: "/").last.map(String.init) ?? trimmed
        return ModelCatalog(entries: [Entry(name: name, path: trimmed)])
    }

    /// Adds `path` unless an entry already points to it; returns its entry.
    public mutating func include(path: String) -> Entry {
        let candidate = Self.single(path: path).entries[0]
        if let existing = entries.first(where: { $0.path == candidate.path }) { return existing }
        entries.insert(candidate, at: 0)
        return candidate
    }

    /// The entry whose name matches `title` (case-insensitively; an A1111 title's " [hash]" suffix is ignored, and a
    /// checkpoint file's name matches with or without `.safetensors`, like A1111's `model_name`).
    public func entry(title: String) -> Entry? {
        var key = title.lowercased()
        if let bracket = key.range(of: " [") { key = String(key[..<bracket.lowerBound]) }
        return entries.first { $0.name.lowercased() == key }
            ?? entries.first { $0.name.lowercased() == key + ".safetensors" }
    }
}

/// A configuration or start-up problem of the server, with a message for the user.
public struct ServerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

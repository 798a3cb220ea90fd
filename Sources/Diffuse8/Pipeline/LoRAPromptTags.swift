#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
/// A1111's extra-network tags for LoRAs in a prompt: `<lora:NAME>` or `<lora:NAME:WEIGHT>` (a third field, A1111's
/// separate UNet weight, is accepted and its first weight used for both). The tags are taken out of the text that is
/// encoded; the prompt recorded in the PNG keeps them, as A1111 does.
public enum LoRAPromptTags {
    public struct Tag: Equatable, Sendable {
        public var name: String
        public var weight: Float
    }

    /// The prompt without its LoRA tags, and the tags in order. Throws for a tag whose weight is not a number.
    public static func extract(_ prompt: String) throws -> (prompt: String, tags: [Tag]) {
        var text = ""
        var tags: [Tag] = []
        var rest = Substring(prompt)
        while let open = rest.range(of: "<lora:") {
            guard let close = rest[open.upperBound...].firstIndex(of: ">") else { break }
            text += rest[..<open.lowerBound]
            let fields = rest[open.upperBound..<close].split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard let name = fields.first, !name.isEmpty else { throw PipelineError("LoRA tag '\(rest[open.lowerBound...close])' has no name") }
            var weight: Float = 1
            if fields.count > 1 {
                guard let w = Float(fields[1]), w.isFinite else {
                    throw PipelineError("LoRA tag '\(rest[open.lowerBound...close])': weight '\(fields[1])' is not a number")
                }
                weight = w
            }
            tags.append(Tag(name: name, weight: weight))
            rest = rest[rest.index(after: close)...]
        }
        return (text + rest, tags)
    }

    /// `<directory>/<name>.safetensors`, or an error naming what was looked for and what the folder has.
    public static func file(named name: String, in directory: String?) throws -> String {
        guard let directory else {
            throw PipelineError("the prompt uses <lora:\(name)>; give the folder holding \(name).safetensors with --lora-dir")
        }
        let path = directory + "/" + name + ".safetensors"
        guard SingleFileCheckpoint.isFile(path) else {
            let present = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
                .filter { $0.hasSuffix(".safetensors") }.sorted().prefix(10)
            throw PipelineError("<lora:\(name)>: \(path) does not exist (LoRAs in \(directory): \(present.isEmpty ? "none" : present.joined(separator: ", ")))")
        }
        return path
    }
}

import Diffuse8

/// Paths of the committed test fixtures (made by `tools/make_reference.py`).
enum Fixtures {
    /// `Tests/Fixtures`, found from this source file so tests run from any working directory.
    static let root: String = {
        var parts = String(#filePath).split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(2)  // Diffuse8Tests/Fixtures.swift
        return parts.joined(separator: "/") + "/Fixtures"
    }()

    static func path(_ relative: String) -> String { root + "/" + relative }

    /// Reference tensors recorded from diffusers/transformers/torch: `Tests/Fixtures/reference/<name>.safetensors`.
    static func reference(_ name: String) throws -> SafetensorsFile {
        try SafetensorsFile(path: path("reference/\(name).safetensors"))
    }
}

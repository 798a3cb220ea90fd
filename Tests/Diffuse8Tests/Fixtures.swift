import Diffuse8
import XCTest

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

extension Fixtures {
    /// Checks a generation against a diffusers reference recorded as `<key>.latents` and `<key>.image` (HWC, 0…255):
    /// final latents within `latentLimit` relative L2, every pixel within one grey level.
    static func assertMatches(_ result: GenerationResult, _ reference: SafetensorsFile, key: String, latentLimit: Double = 1e-3,
                              file: StaticString = #filePath, line: UInt = #line) throws {
        let latentError = result.latents.relativeL2(to: try reference.tensor(named: "\(key).latents"))
        XCTAssertLessThan(latentError, latentLimit, "\(key): final latents relative L2 \(latentError)", file: file, line: line)
        let expected = try reference.tensor(named: "\(key).image").scalars
        let image = ImageConversion.pixelImages(fromDecoded: result.image)[0]
        XCTAssertEqual(image.pixels.count, expected.count, "\(key): image size", file: file, line: line)
        let differences = zip(image.pixels, expected).map { abs(Double($0.0) - Double($0.1)) }
        XCTAssertLessThanOrEqual(differences.max() ?? 99, 1, "\(key): largest pixel difference \(differences.max() ?? 0) grey levels",
                                 file: file, line: line)
    }
}

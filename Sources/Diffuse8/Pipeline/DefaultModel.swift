#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Where `diffuse8 generate` finds a model when `--model` is not given.
///
/// Order: the `DIFFUSE8_DEFAULT_MODEL` environment variable; then the model shipped in this
/// repository (`models/default`, found relative to this source file, which is where `swift run`
/// builds from); then the tiny test pipeline (`Tests/Fixtures/tiny-sd15`), which draws noise.
public enum DefaultModel {
    public static let environmentVariable = "DIFFUSE8_DEFAULT_MODEL"

    /// The repository root as seen at build time.
    static let repositoryRoot: String = {
        var parts = String(#filePath).split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(4)  // Sources/Diffuse8/Pipeline/DefaultModel.swift
        return parts.joined(separator: "/")
    }()

    /// Candidate folders, most preferred first.
    public static var candidates: [String] {
        var list: [String] = []
        if let fromEnvironment = ProcessInfo.processInfo.environment[environmentVariable], !fromEnvironment.isEmpty {
            list.append(fromEnvironment)
        }
        list.append(repositoryRoot + "/models/default")
        list.append(repositoryRoot + "/Tests/Fixtures/tiny-sd15")
        return list
    }

    /// The first candidate that holds a `model_index.json`.
    public static func locate() throws -> String {
        for path in candidates where FileManager.default.fileExists(atPath: path + "/model_index.json") {
            return path
        }
        throw PipelineError("no default model found (looked in \(candidates.joined(separator: ", "))); "
                            + "pass --model DIR with a diffusers folder or set \(environmentVariable)")
    }
}

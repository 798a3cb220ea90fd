import Foundation
@testable import Diffuse8

/// Temporary folders for tests that write files (removed in tearDown).
enum FormatsTestFiles {
    static func make() throws -> String {
        let path = NSTemporaryDirectory() + "diffuse8-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A safetensors file `name` of zero tensors with these names and shapes, in a new temporary folder
    /// (returned so the caller can remove it).
    static func zeros(_ tensors: [String: [Int]], name: String) throws -> (folder: String, path: String) {
        let folder = try make()
        var writer = SafetensorsWriter()
        for (tensor, shape) in tensors { try writer.add(tensor, Tensor(zeros: shape)) }
        let path = folder + "/" + name
        try writer.write(to: path)
        return (folder, path)
    }

    static func remove(_ path: String?) {
        if let path { try? FileManager.default.removeItem(atPath: path) }
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}

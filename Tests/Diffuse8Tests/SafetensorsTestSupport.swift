import Foundation

/// Temporary folders for tests that write files (removed in tearDown).
enum FormatsTestFiles {
    static func make() throws -> String {
        let path = NSTemporaryDirectory() + "diffuse8-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func remove(_ path: String?) {
        if let path { try? FileManager.default.removeItem(atPath: path) }
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}

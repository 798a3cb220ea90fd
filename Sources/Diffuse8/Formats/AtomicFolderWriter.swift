#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole output folder written atomically, as `AtomicFileWriter` writes a file: `build` fills
/// `<output>.partial-<pid>` (registered with `TemporaryPaths`, so an interrupt removes it), which is renamed to
/// `output` at the end; on any error it is removed and nothing appears at `output`.
public enum AtomicFolderWriter {
    /// `renameFailure` is the error thrown when the finished folder cannot be moved into place.
    public static func write(to output: String, renameFailure: @autoclosure () -> Error,
                             _ build: (_ temporary: String) throws -> Void) throws {
        let fm = FileManager.default
        let temporary = output + ".partial-\(getpid())"
        try? fm.removeItem(atPath: temporary)
        TemporaryPaths.register(temporary)
        defer { TemporaryPaths.release(temporary) }
        do {
            try fm.createDirectory(atPath: temporary, withIntermediateDirectories: true)
            try build(temporary)
            guard rename(temporary, output) == 0 else { throw renameFailure() }
        } catch {
            try? fm.removeItem(atPath: temporary)
            throw error
        }
    }
}

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

/// A file could not be written. The description names the path and the system's reason.
public struct FileWriteError: Error, CustomStringConvertible, Sendable {
    /// The file that was to be written.
    public let path: String
    public let description: String

    public init(path: String, _ description: String) {
        self.path = path
        self.description = description
    }
}

/// Writes a file so that readers never see it half-written: the bytes go to `<dir>/.<name>.tmp-<pid>`
/// in the same folder, are flushed with `fsync`, and the temporary file is then `rename`d over `path`
/// (atomic on POSIX file systems). On any failure the temporary file is removed and an existing file at
/// `path` is left untouched; while it exists it is listed in `TemporaryPaths`, so an interrupted command
/// removes it too.
///
/// Limitation: the folder must already exist (it is not created) and must be on one file system with
/// the target, which holds by construction.
public enum AtomicFileWriter {
    /// Receives the file's contents in order, in as many pieces as the caller likes (so multi-GB
    /// outputs never have to be assembled in memory).
    public struct Sink {
        fileprivate let descriptor: Int32
        fileprivate let temporaryPath: String
        fileprivate let path: String

        /// Appends `bytes`, retrying partial writes.
        public func write(_ bytes: UnsafeRawBufferPointer) throws {
            guard var next = bytes.baseAddress else { return }
            var remaining = bytes.count
            while remaining > 0 {
                let written = posixWrite(descriptor, next, remaining)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw FileWriteError(path: path, "cannot write \(temporaryPath) (\(systemReason())); is the disk full?")
                }
                next += written
                remaining -= written
            }
        }

        /// Appends `bytes`.
        public func write(_ bytes: [UInt8]) throws {
            try bytes.withUnsafeBytes { try write($0) }
        }
    }

    /// Writes `bytes` to `path` atomically.
    public static func write(_ bytes: [UInt8], to path: String) throws {
        try write(to: path) { try $0.write(bytes) }
    }

    /// Writes the contents that `body` produces to `path` atomically. If `body` throws, nothing is
    /// left behind and the error is rethrown.
    public static func write(to path: String, _ body: (Sink) throws -> Void) throws {
        let (directory, name) = split(path)
        guard !name.isEmpty, name != ".", name != ".." else {
            throw FileWriteError(path: path, "\(path) names a folder, not a file; give a file name")
        }
        let temporaryPath = "\(directory)/.\(name).tmp-\(getpid())"
        let descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            let reason = systemReason()
            throw FileWriteError(path: path, "cannot create a file in \(directory) for \(path) (\(reason)); the folder must exist and be writable")
        }
        TemporaryPaths.register(temporaryPath)
        defer { TemporaryPaths.release(temporaryPath) }
        var closed = false
        do {
            try body(Sink(descriptor: descriptor, temporaryPath: temporaryPath, path: path))
            guard fsync(descriptor) == 0 else {
                throw FileWriteError(path: path, "cannot flush \(temporaryPath) to disk (\(systemReason()))")
            }
            closed = true
            guard close(descriptor) == 0 else {
                throw FileWriteError(path: path, "cannot close \(temporaryPath) (\(systemReason()))")
            }
            guard rename(temporaryPath, path) == 0 else {
                throw FileWriteError(path: path, "cannot move the finished file into place at \(path) (\(systemReason()))")
            }
        } catch {
            if !closed { close(descriptor) }
            unlink(temporaryPath)
            throw error
        }
    }

    /// Folder and last component of `path` ("." when there is no folder).
    static func split(_ path: String) -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, String(path[path.index(after: slash)...]))
    }
}

private func systemReason() -> String { String(cString: strerror(errno)) }

/// The C `write` (inside `Sink` the name means the method).
private func posixWrite(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, bytes, count)
}

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

/// Reads small input files (JSON configurations, tokenizer files, prompt lists) without the ways a bad path can
/// hang or exhaust the process: the file is opened non-blocking (a FIFO or device in its place does not block
/// `open`), must be a regular file, and must not exceed `limit` bytes.
public enum InputFile {
    /// Largest file read whole (a CLIP `vocab.json` is ~1 MB).
    public static let defaultLimit = 256 << 20

    /// The bytes of `path`, or nil (with `reason` set) when it cannot be opened, is not a regular file or is
    /// larger than `limit`.
    public static func contents(atPath path: String, limit: Int = defaultLimit) -> Data? {
        var reason = ""
        return contents(atPath: path, limit: limit, reason: &reason)
    }

    /// As `contents(atPath:limit:)`, saying why in `reason` when it returns nil.
    public static func contents(atPath path: String, limit: Int = defaultLimit, reason: inout String) -> Data? {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            reason = String(cString: strerror(errno))
            return nil
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            reason = String(cString: strerror(errno))
            return nil
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            reason = "not a regular file"
            return nil
        }
        let size = Int(info.st_size)
        guard size <= limit else {
            reason = "\(size) bytes, more than the \(limit)-byte limit for this kind of file"
            return nil
        }
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, size - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                reason = n < 0 ? String(cString: strerror(errno)) : "the file shrank while it was read"
                return nil
            }
            done += n
        }
        return Data(bytes)
    }

    /// Whether `path` is a regular file (following symbolic links).
    public static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }
}

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

/// The temporary files and folders this process is writing (`AtomicFileWriter`'s `.<name>.tmp-<pid>`
/// files, `AtomicFolderWriter`'s `<out>.partial-<pid>` folders). An interrupted command removes them
/// with `removeAll()` before it exits, so Ctrl-C never leaves half-written outputs behind.
public enum TemporaryPaths {
    nonisolated(unsafe) private static var paths: Set<String> = []
    nonisolated(unsafe) private static let mutex: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    private static func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    /// Records `path` as temporary until `release(path)`.
    public static func register(_ path: String) {
        _ = locked { paths.insert(path) }
    }

    /// Forgets `path` (it was renamed into place or removed).
    public static func release(_ path: String) {
        _ = locked { paths.remove(path) }
    }

    /// Removes every registered file and folder; returns what was removed. Called once, when the process is
    /// about to exit after a signal.
    @discardableResult
    public static func removeAll() -> [String] {
        let current = locked { () -> Set<String> in
            defer { paths = [] }
            return paths
        }
        for path in current { try? FileManager.default.removeItem(atPath: path) }
        return current.sorted()
    }
}

/// Deterministic pause points for the interruption tests: when the environment variable
/// `DIFFUSE8_TEST_PAUSE_AT` equals a point's name, the process writes `paused at <name>` to stderr and
/// blocks there until a signal ends it. Without the variable these are no-ops.
public enum TestPausePoint {
    /// Pauses at `name` when asked to (see the type's documentation).
    public static func reach(_ name: String) {
        guard ProcessInfo.processInfo.environment["DIFFUSE8_TEST_PAUSE_AT"] == name else { return }
        let line = Array("paused at \(name)\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        while true { pause() }
    }
}

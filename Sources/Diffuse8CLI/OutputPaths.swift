#if canImport(Glibc)
import Glibc
#endif
import Diffuse8

/// Output path helpers: numbering and an early writability check, so a bad path fails before minutes of work.
enum OutputPaths {
    /// `dir/name.png` → `dir/name-3.png`.
    static func numbered(_ path: String, _ index: Int) -> String {
        let stem = path.dropLast(4)
        return "\(stem)-\(index).png"
    }

    /// Throws a clear error when the folder of `path` does not exist or cannot be written.
    static func checkWritable(_ path: String) throws {
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        var info = stat()
        guard stat(directory.isEmpty ? "/" : directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw PipelineError("cannot write \(path): folder '\(directory)' does not exist; create it or choose another --output")
        }
        guard access(directory.isEmpty ? "/" : directory, W_OK) == 0 else {
            throw PipelineError("cannot write \(path): folder '\(directory)' is not writable; choose another --output")
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A shared library opened with `dlopen`, from which `@convention(c)` function pointers are resolved.
public final class CUDASharedLibrary: @unchecked Sendable {
    public let name: String
    /// The path that was opened (or the bare soname when the system linker found it).
    public let path: String
    let handle: UnsafeMutableRawPointer

    init(name: String, path: String, handle: UnsafeMutableRawPointer) {
        self.name = name
        self.path = path
        self.handle = handle
    }

    /// Resolves the first of `symbols` that exists, cast to the function type `T`.
    func function<T>(_ symbols: String..., as type: T.Type = T.self) throws -> T {
        for symbol in symbols {
            if let pointer = dlsym(handle, symbol) { return unsafeBitCast(pointer, to: T.self) }
        }
        throw CUDAError.missingSymbol(library: name, path: path, symbol: symbols.joined(separator: " / "))
    }

    /// Like `function` but nil when absent (optional features).
    func optionalFunction<T>(_ symbol: String, as type: T.Type = T.self) -> T? {
        dlsym(handle, symbol).map { unsafeBitCast($0, to: T.self) }
    }
}

/// Finds and opens the NVIDIA libraries at run time, so that building needs no CUDA.
///
/// Search order for each library: the directories in `DIFFUSE8_CUDA_LIBRARY_PATH`, `CUDA_HOME` and
/// `CUDA_PATH` (their `lib64`, `lib`, `targets/x86_64-linux/lib`), then the system linker's own search
/// (`LD_LIBRARY_PATH`, ld.so.cache) by soname, then `/usr/local/cuda*/…/lib`, `/usr/lib/x86_64-linux-gnu`
/// and friends, then pip's `site-packages/nvidia/*/lib` folders of every `python3` on `PATH`, of
/// `VIRTUAL_ENV` and of common venv locations. The driver (`libcuda`) is searched by soname first so that
/// the real driver wins over a toolkit stub; folders named `stubs` are skipped.
public enum CUDALibraryLoader {
    /// The sonames tried for each library, newest first.
    public static let driverNames = ["libcuda.so.1", "libcuda.so"]
    public static let nvrtcNames = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    public static let cublasLtNames = ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"]
    public static let cudnnNames = ["libcudnn.so.9", "libcudnn.so"]

    /// Opens the first of `sonames` found; throws `CUDAError.libraryNotFound` listing every place tried.
    public static func open(_ library: String, sonames: [String], systemFirst: Bool = false,
                            hint: String) throws -> CUDASharedLibrary {
        var tried: [String] = []
        func attempt(_ path: String) -> CUDASharedLibrary? {
            if path.contains("/") && access(path, F_OK) != 0 { tried.append("\(path) (absent)"); return nil }
            guard let handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL) else {
                let reason = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
                tried.append("\(path) (\(reason))")
                return nil
            }
            return CUDASharedLibrary(name: library, path: resolvedPath(handle, fallback: path), handle: handle)
        }
        let directories = searchDirectories()
        if systemFirst { for name in sonames { if let lib = attempt(name) { return lib } } }
        for directory in directories.explicit {
            for name in sonames { if let lib = attempt(directory + "/" + name) { return lib } }
        }
        if !systemFirst { for name in sonames { if let lib = attempt(name) { return lib } } }
        for directory in directories.fallback {
            for name in sonames {
                let path = directory + "/" + name
                if access(path, F_OK) == 0, let lib = attempt(path) { return lib }
            }
        }
        tried.append(contentsOf: directories.fallback.map { "\($0)/{\(sonames.joined(separator: ","))} (absent)" })
        throw CUDAError.libraryNotFound(library: library, tried: tried, hint: hint)
    }

    /// NVRTC loads `libnvrtc-builtins.so.N` by soname; opening it from NVRTC's own folder first makes
    /// that work even when the folder is not on `LD_LIBRARY_PATH` (pip wheels).
    static func preloadNVRTCBuiltins(besides nvrtc: CUDASharedLibrary) {
        guard let slash = nvrtc.path.lastIndex(of: "/") else { return }
        let directory = String(nvrtc.path[..<slash])
        for name in entries(of: directory) where name.hasPrefix("libnvrtc-builtins.so") {
            _ = dlopen(directory + "/" + name, RTLD_NOW | RTLD_GLOBAL)
        }
    }

    static func resolvedPath(_ handle: UnsafeMutableRawPointer, fallback: String) -> String {
        // dladdr on a known symbol would need one; realpath of an explicit path is enough for reports.
        if fallback.contains("/"), let real = realpath(fallback, nil) {
            defer { free(real) }
            return String(cString: real)
        }
        return fallback
    }

    /// Directories to search: `explicit` ones come from the environment, `fallback` ones are guesses.
    public static func searchDirectories() -> (explicit: [String], fallback: [String]) {
        var explicit: [String] = []
        if let list = environment("DIFFUSE8_CUDA_LIBRARY_PATH") {
            explicit += list.split(separator: ":").map(String.init)
        }
        for variable in ["CUDA_HOME", "CUDA_PATH"] {
            if let root = environment(variable) { explicit += toolkitLibraryFolders(root) }
        }
        var fallback: [String] = []
        if let list = environment("LD_LIBRARY_PATH") { fallback += list.split(separator: ":").map(String.init) }
        fallback += toolkitLibraryFolders("/usr/local/cuda")
        for name in entries(of: "/usr/local").sorted(by: >) where name.hasPrefix("cuda-") {
            fallback += toolkitLibraryFolders("/usr/local/" + name)
        }
        fallback += ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                     "/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/wsl/lib"]
        fallback += pipNVIDIAFolders()
        var seen = Set<String>()
        let clean = { (list: [String]) in list.filter { !$0.isEmpty && !$0.contains("/stubs") && seen.insert($0).inserted } }
        return (clean(explicit), clean(fallback))
    }

    static func toolkitLibraryFolders(_ root: String) -> [String] {
        [root + "/lib64", root + "/lib", root + "/targets/x86_64-linux/lib", root + "/targets/sbsa-linux/lib"]
    }

    /// `…/site-packages/nvidia/*/lib` of the Python environments we can find without running Python.
    static func pipNVIDIAFolders() -> [String] {
        var prefixes: [String] = []
        if let venv = environment("VIRTUAL_ENV") { prefixes.append(venv) }
        if let path = environment("PATH") {
            for directory in path.split(separator: ":").map(String.init) where directory.hasSuffix("/bin") {
                if access(directory + "/python3", X_OK) == 0 || access(directory + "/python", X_OK) == 0 {
                    prefixes.append(String(directory.dropLast(4)))
                }
            }
        }
        if let home = environment("HOME") { prefixes += [home + "/.venv", home + "/.local"] }
        for name in entries(of: "/opt") { prefixes += ["/opt/" + name + "/.venv", "/opt/" + name + "/venv", "/opt/" + name] }
        prefixes += ["/usr/local", "/usr"]
        var folders: [String] = []
        for prefix in prefixes {
            for lib in ["/lib", "/lib64"] {
                for python in entries(of: prefix + lib) where python.hasPrefix("python3") {
                    for packages in ["site-packages", "dist-packages"] {
                        let nvidia = "\(prefix)\(lib)/\(python)/\(packages)/nvidia"
                        for package in entries(of: nvidia) {
                            folders.append(nvidia + "/" + package + "/lib")
                            // CUDA 13 wheels put everything under nvidia/cu13/lib.
                            folders.append(nvidia + "/" + package + "/lib64")
                        }
                    }
                }
            }
        }
        return folders.filter { access($0, F_OK) == 0 }
    }

    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        let string = String(cString: value)
        return string.isEmpty ? nil : string
    }

    /// Names in a directory (empty if it does not exist).
    static func entries(of directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A loaded kernel (`CUfunction`).
public struct CUDAFunction: @unchecked Sendable {
    let handle: OpaquePointer?
    public let name: String
}

/// One argument of a kernel launch, laid out as the kernel's C parameter.
public enum CUDAKernelArgument {
    case pointer(UInt64)
    case int32(Int32)
    case float(Float)
    case int64(Int64)
    /// A TMA descriptor passed by value (`const __grid_constant__ CUtensorMap`).
    case tensorMap(CUDATensorMap)

    /// Bytes and alignment of the parameter.
    var layout: (size: Int, alignment: Int) {
        switch self {
        case .tensorMap: return (CUDATensorMap.byteCount, 64)
        default: return (8, 8)
        }
    }

    static func tensor(_ t: CUDATensor) -> CUDAKernelArgument { .pointer(t.address) }
    static func int(_ v: Int) -> CUDAKernelArgument { .int32(Int32(v)) }
}

/// Compiles CUDA C with NVRTC for the card's architecture (`--gpu-arch=sm_XY`), caches the cubin on disk
/// and loads it with `cuModuleLoadData`.
///
/// Cache folder: `$DIFFUSE8_KERNEL_CACHE`, else `$XDG_CACHE_HOME/diffuse8/kernels`, else
/// `~/.cache/diffuse8/kernels`; file `<module>-sm<XY>-<hash>.cubin` where the hash (FNV-1a, 64 bit)
/// covers the source, the options, the architecture and the NVRTC version. Unwritable caches are
/// ignored (the kernel is then compiled in every process).
public final class CUDAKernelCompiler: @unchecked Sendable {
    let context: CUDAContext
    private let lock = CUDALock()
    private var modules: [String: OpaquePointer?] = [:]
    private var functions: [String: CUDAFunction] = [:]
    /// Seconds spent in NVRTC in this process, and modules loaded from the disk cache (for reports).
    public private(set) var compileSeconds = 0.0
    public private(set) var cacheHits = 0

    /// The 16-bit storage type every kernel is compiled for (bfloat16: `D8_BF16` defined, separate modules).
    let storageType: CUDADataType

    /// Whether kernels are launched with programmatic stream serialization, so that each may start while the kernel
    /// before it finishes (sm_90 and later): every kernel waits for its predecessor in `D8_AFTER_PREVIOUS_KERNEL()`
    /// before it touches memory, then lets its successor start. Launches captured into a CUDA graph keep this as
    /// programmatic edges. Off (or with `DIFFUSE8_OVERLAPPED_LAUNCHES=off`), each kernel starts only after the
    /// previous one has ended, as with `cuLaunchKernel`.
    public var overlapsLaunches: Bool

    init(context: CUDAContext, storageType: CUDADataType) {
        self.context = context
        self.storageType = storageType
        overlapsLaunches = context.computeCapability.major >= 9 && context.driver.cuLaunchKernelEx != nil
            && CUDALibraryLoader.environment("DIFFUSE8_OVERLAPPED_LAUNCHES") != "off"
    }

    var architecture: String { "sm_\(context.computeCapability.major)\(context.computeCapability.minor)" }

    /// The kernel `name` from the module built from `source` (compiled at most once per process).
    /// The kernel `name` of `module`, compiled for `storageType` (bfloat16: `D8_BF16` defined, a separate module).
    /// `architecture` overrides the card's (e.g. `sm_90a` for kernels with Hopper-only instructions).
    func function(_ name: String, module: String, architecture: String? = nil,
                  source: @autoclosure () -> String) throws -> CUDAFunction {
        try lock.withLock {
            let bfloat16 = storageType == .bfloat16
            let module = bfloat16 ? module + "_bf16" : module
            let key = module + "::" + name
            if let function = functions[key] { return function }
            let moduleHandle: OpaquePointer?
            if let loaded = modules[module] { moduleHandle = loaded } else {
                moduleHandle = try loadModule(module, source: (bfloat16 ? "#define D8_BF16\n" : "") + source(),
                                              architecture: architecture ?? self.architecture)
                modules[module] = moduleHandle
            }
            var function: OpaquePointer? = nil
            try context.driver.check(context.driver.cuModuleGetFunction(&function, moduleHandle, name),
                                     "cuModuleGetFunction(\(name))")
            let result = CUDAFunction(handle: function, name: name)
            functions[key] = result
            return result
        }
    }

    /// Lets `function` use `bytes` of dynamic shared memory (above the default 48 KB; set once per function).
    func allowSharedMemory(_ function: CUDAFunction, bytes: Int) throws {
        try lock.withLock {
            let key = function.handle.map { Int(bitPattern: $0) } ?? 0
            guard sharedMemoryAllowed[key, default: 0] < bytes else { return }
            try context.driver.check(context.driver.cuFuncSetAttribute(function.handle, CUDADriverAPI.funcAttributeMaxDynamicSharedMemory,
                                                                      Int32(bytes)), "cuFuncSetAttribute(\(function.name), \(bytes) bytes of shared memory)")
            sharedMemoryAllowed[key] = bytes
        }
    }
    private var sharedMemoryAllowed: [Int: Int] = [:]

    private func loadModule(_ module: String, source: String, architecture: String) throws -> OpaquePointer? {
        let nvrtc = try context.nvrtc()
        var options = Self.options(architecture: architecture)
        // DIFFUSE8_NVRTC_VERBOSE=1 prints ptxas' register/spill report for every kernel (to stderr).
        let verbose = CUDALibraryLoader.environment("DIFFUSE8_NVRTC_VERBOSE") != nil
        if verbose { options.append("--ptxas-options=-v") }
        let version = nvrtc.version
        let key = Self.fnv1a(source + "\u{0}" + options.joined(separator: " ") + "\u{0}nvrtc\(version.major).\(version.minor)")
        let hex = String(key, radix: 16)
        let cachePath = Self.cacheDirectory().map { "\($0)/\(module)-\(architecture)-\(hex).cubin" }
        var cubin: [UInt8]
        if let cachePath, let cached = Self.readFile(cachePath) {
            cubin = cached
            cacheHits += 1
        } else {
            let start = Self.now()
            cubin = try Self.compile(module, source: source, options: options, nvrtc: nvrtc, printLog: verbose)
            compileSeconds += Self.now() - start
            if let cachePath { Self.writeFileAtomically(cachePath, cubin) }
        }
        try context.makeCurrent()
        var handle: OpaquePointer? = nil
        try cubin.withUnsafeBytes {
            try context.driver.check(context.driver.cuModuleLoadData(&handle, $0.baseAddress!), "cuModuleLoadData(\(module))")
        }
        return handle
    }

    /// The options every module is compiled with, for `architecture` (`sm_XY`, or `sm_90a`).
    static func options(architecture: String) -> [String] {
        ["--gpu-architecture=\(architecture)", "--std=c++17", "-default-device", "--restrict"]
    }

    /// NVRTC, found as `CUDAContext` finds it (needs no GPU: tests compile every kernel source with it).
    static func loadNVRTC() throws -> NVRTCAPI {
        let library = try CUDALibraryLoader.open(
            "NVRTC (libnvrtc)", sonames: CUDALibraryLoader.nvrtcNames,
            hint: "Install the CUDA toolkit or `pip install nvidia-cuda-nvrtc-cu12`, or set CUDA_HOME.")
        CUDALibraryLoader.preloadNVRTCBuiltins(besides: library)
        return try NVRTCAPI(library)
    }

    /// `source` compiled to a cubin; a compilation error throws `CUDAError.compilation` with NVRTC's log.
    static func compile(_ module: String, source: String, options: [String], nvrtc: NVRTCAPI,
                        printLog: Bool = false) throws -> [UInt8] {
        var program: OpaquePointer? = nil
        try nvrtc.check(nvrtc.nvrtcCreateProgram(&program, source, module + ".cu", 0, nil, nil), "nvrtcCreateProgram")
        defer { _ = nvrtc.nvrtcDestroyProgram(&program) }
        let cOptions = options.map { strdup($0) }
        defer { cOptions.forEach { free($0) } }
        let result = cOptions.map { UnsafePointer($0) }.withUnsafeBufferPointer {
            nvrtc.nvrtcCompileProgram(program, Int32(options.count), $0.baseAddress)
        }
        if result != 0 || printLog {
            var logSize = 0
            _ = nvrtc.nvrtcGetProgramLogSize(program, &logSize)
            var log = [CChar](repeating: 0, count: max(logSize, 1))
            _ = nvrtc.nvrtcGetProgramLog(program, &log)
            let text = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if result != 0 { throw CUDAError.compilation(kernel: module, options: options, log: text) }
            fputs("NVRTC log for \(module):\n\(text)\n", stderr)
        }
        var size = 0
        try nvrtc.check(nvrtc.nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize")
        var bytes = [CChar](repeating: 0, count: size)
        try nvrtc.check(nvrtc.nvrtcGetCUBIN(program, &bytes), "nvrtcGetCUBIN")
        return bytes.map { UInt8(bitPattern: $0) }
    }

    /// Queues `function` on the context's stream. Arguments must match the kernel's C parameters.
    func launch(_ function: CUDAFunction, grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int = 0,
                _ arguments: [CUDAKernelArgument]) throws {
        guard grid.0 > 0, grid.1 > 0, grid.2 > 0 else { return }
        var offsets: [Int] = [], size = 0
        for argument in arguments {
            let (bytes, alignment) = argument.layout
            size = (size + alignment - 1) / alignment * alignment
            offsets.append(size)
            size += bytes
        }
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(size, 8), alignment: 64)
        defer { storage.deallocate() }
        var pointers = [UnsafeMutableRawPointer?]()
        for (argument, offset) in zip(arguments, offsets) {
            let slot = storage + offset
            switch argument {
            case let .pointer(v): slot.storeBytes(of: v, as: UInt64.self)
            case let .int32(v): slot.storeBytes(of: v, as: Int32.self)
            case let .float(v): slot.storeBytes(of: v, as: Float.self)
            case let .int64(v): slot.storeBytes(of: v, as: Int64.self)
            case let .tensorMap(map):
                for (i, word) in map.words.enumerated() { (slot + 8 * i).storeBytes(of: word, as: UInt64.self) }
            }
            pointers.append(slot)
        }
        try context.makeCurrent()
        let driver = context.driver
        try pointers.withUnsafeMutableBufferPointer { params in
            if overlapsLaunches, let launchEx = driver.cuLaunchKernelEx {
                try withOverlappingLaunchConfiguration(grid: grid, block: block, sharedBytes: sharedBytes) { config in
                    try driver.check(launchEx(config, function.handle, params.baseAddress, nil),
                                     "cuLaunchKernelEx(\(function.name), grid \(grid), block \(block))")
                }
            } else {
                try driver.check(driver.cuLaunchKernel(function.handle, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2),
                                                       UInt32(block.0), UInt32(block.1), UInt32(block.2),
                                                       UInt32(sharedBytes), context.stream.handle, params.baseAddress, nil),
                                 "cuLaunchKernel(\(function.name), grid \(grid), block \(block))")
            }
        }
    }

    /// Calls `body` with a `CUlaunchConfig` for the context's stream that carries one `CUlaunchAttribute`:
    /// CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION (6) = 1. Layouts as in `cuda.h` (64-bit): the config is
    /// six grid/block dimensions, the shared bytes, the stream at offset 32, the attribute pointer at 40 and their
    /// count at 48 (56 bytes); an attribute is its 4-byte id, padding, and a 64-byte value union at offset 8.
    private func withOverlappingLaunchConfiguration(grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int,
                                                    _ body: (UnsafeRawPointer) throws -> Void) rethrows {
        let storage = UnsafeMutableRawPointer.allocate(byteCount: 56 + 72, alignment: 16)
        defer { storage.deallocate() }
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: 56 + 72)
        let attribute = storage + 56
        for (i, value) in [grid.0, grid.1, grid.2, block.0, block.1, block.2, sharedBytes].enumerated() {
            storage.storeBytes(of: UInt32(value), toByteOffset: 4 * i, as: UInt32.self)
        }
        storage.storeBytes(of: UInt(bitPattern: context.stream.handle), toByteOffset: 32, as: UInt.self)
        storage.storeBytes(of: UInt(bitPattern: attribute), toByteOffset: 40, as: UInt.self)
        storage.storeBytes(of: UInt32(1), toByteOffset: 48, as: UInt32.self)
        attribute.storeBytes(of: UInt32(6), as: UInt32.self)
        attribute.storeBytes(of: Int32(1), toByteOffset: 8, as: Int32.self)
        try body(storage)
    }

    // MARK: Disk cache helpers (plain libc: FoundationEssentials keeps the binary small)

    package static func cacheDirectory() -> String? {
        let base: String
        if let explicit = CUDALibraryLoader.environment("DIFFUSE8_KERNEL_CACHE") { base = explicit }
        else if let xdg = CUDALibraryLoader.environment("XDG_CACHE_HOME") { base = xdg + "/diffuse8/kernels" }
        else if let home = CUDALibraryLoader.environment("HOME") { base = home + "/.cache/diffuse8/kernels" }
        else { return nil }
        var path = ""
        for component in base.split(separator: "/") {
            path += "/" + component
            if access(path, F_OK) != 0 && mkdir(path, 0o755) != 0 && errno != EEXIST { return nil }
        }
        return access(base, W_OK) == 0 ? base : nil
    }

    static func readFile(_ path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return bytes.isEmpty ? nil : bytes
    }

    static func writeFileAtomically(_ path: String, _ bytes: [UInt8]) {
        let temporary = path + ".tmp\(getpid())"
        guard let file = fopen(temporary, "wb") else { return }
        let written = fwrite(bytes, 1, bytes.count, file)
        fclose(file)
        if written == bytes.count { rename(temporary, path) } else { unlink(temporary) }
    }

    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return hash
    }

    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}

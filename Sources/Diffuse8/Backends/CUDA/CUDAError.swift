/// Everything that can go wrong on the CUDA backend. Each description says what failed and what to do.
public enum CUDAError: Error, CustomStringConvertible, Sendable {
    /// A shared library (driver, NVRTC, cuBLASLt, cuDNN) was not found; lists every path tried.
    case libraryNotFound(library: String, tried: [String], hint: String)
    /// A library loaded but lacks a function we need (too old a version).
    case missingSymbol(library: String, path: String, symbol: String)
    /// The driver reported no CUDA device (or `cuInit` failed).
    case noDevice(String)
    /// A driver API call failed.
    case driver(call: String, code: Int32, name: String, message: String)
    /// `cuMemAlloc` could not get the memory.
    case outOfMemory(requestedBytes: Int, freeBytes: Int, totalBytes: Int, cachedBytes: Int)
    /// NVRTC failed to compile a kernel; `log` is the compiler's log.
    case compilation(kernel: String, options: [String], log: String)
    /// Any other NVRTC call failed.
    case nvrtc(call: String, code: Int32, message: String)
    /// A cuBLASLt call failed.
    case cublas(call: String, status: Int32, detail: String)
    /// A cuDNN call failed.
    case cudnn(call: String, status: Int32, message: String)
    /// Shapes or dtypes that the kernel cannot handle.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .libraryNotFound(library, tried, hint):
            return "CUDA: could not load \(library). \(hint)\nLooked in:\n" + tried.map { "  " + $0 }.joined(separator: "\n")
        case let .missingSymbol(library, path, symbol):
            return "CUDA: \(library) at \(path) has no symbol \(symbol); install a newer CUDA (12.x or 13.x)."
        case let .noDevice(message):
            return "CUDA: no usable GPU: \(message)"
        case let .driver(call, code, name, message):
            return "CUDA driver call \(call) failed: \(name) (\(code)): \(message)"
        case let .outOfMemory(requested, free, total, cached):
            return "CUDA: out of GPU memory allocating \(Self.mib(requested)) (free \(Self.mib(free)) of "
                + "\(Self.mib(total)); \(Self.mib(cached)) held by diffuse8's cache was released and retried). "
                + "Use a smaller batch or resolution, or free the GPU from other processes."
        case let .compilation(kernel, options, log):
            return "NVRTC could not compile \(kernel) with \(options.joined(separator: " ")):\n\(log)"
        case let .nvrtc(call, code, message):
            return "NVRTC call \(call) failed (\(code)): \(message)"
        case let .cublas(call, status, detail):
            return "cuBLASLt call \(call) failed with status \(status) (\(CUDAError.cublasStatusName(status))). \(detail)"
        case let .cudnn(call, status, message):
            return "cuDNN call \(call) failed with status \(status): \(message)"
        case let .invalidArgument(message):
            return "CUDA kernel argument error: \(message)"
        }
    }

    static func mib(_ bytes: Int) -> String { "\(bytes / (1 << 20)) MiB" }

    static func cublasStatusName(_ status: Int32) -> String {
        switch status {
        case 1: return "NOT_INITIALIZED"
        case 3: return "ALLOC_FAILED"
        case 7: return "INVALID_VALUE"
        case 8: return "ARCH_MISMATCH"
        case 11: return "MAPPING_ERROR"
        case 13: return "EXECUTION_FAILED"
        case 14: return "INTERNAL_ERROR"
        case 15: return "NOT_SUPPORTED"
        case 16: return "LICENSE_ERROR"
        default: return "status \(status)"
        }
    }
}

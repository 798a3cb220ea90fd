#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One CUDA device with its primary context, one stream for all work, a caching allocator and the
/// libraries (NVRTC, cuBLASLt, cuDNN) loaded on first use.
///
/// All work is issued on `stream`, so buffers returned to the allocator can be reused by later work
/// without extra synchronisation (stream order). Limitations: one device (index 0 unless
/// `CUDA_VISIBLE_DEVICES`/`deviceIndex` say otherwise), one stream.
public final class CUDAContext: @unchecked Sendable {
    let driver: CUDADriverAPI
    let context: OpaquePointer?
    /// The stream every kernel, copy and GEMM of this context runs on.
    public let stream: CUDAStream
    public let deviceIndex: Int
    public let deviceName: String
    public let computeCapability: (major: Int, minor: Int)
    public let multiprocessorCount: Int
    public let totalMemory: Int
    public let maxSharedMemoryPerBlock: Int
    /// e.g. 13000 for CUDA 13.0.
    public let driverVersion: Int
    let allocator: CUDAMemoryPool
    /// When set, every allocation is filled with FP16 NaN (0xFFFF) so that tests catch unwritten outputs.
    public var poisonsAllocations = false

    private let lock = CUDALock()
    private var _nvrtc: NVRTCAPI?
    private var _cublasLt: CUBLASLtAPI?
    private var _cudnn: CUDNNAPI?

    /// The shared context on device 0, created on first use. Throws (with every path searched) when
    /// there is no driver or no GPU.
    public static func shared() throws -> CUDAContext {
        try sharedLock.withLock {
            if let context = sharedContext { return context }
            let context = try CUDAContext(deviceIndex: 0)
            sharedContext = context
            return context
        }
    }
    nonisolated(unsafe) private static var sharedContext: CUDAContext?
    private static let sharedLock = CUDALock()

    public init(deviceIndex: Int) throws {
        let library = try CUDALibraryLoader.open(
            "the NVIDIA driver (libcuda)", sonames: CUDALibraryLoader.driverNames, systemFirst: true,
            hint: "Is an NVIDIA GPU and its driver installed? (nvidia-smi should list the GPU.)")
        let driver = try CUDADriverAPI(library)
        let initResult = driver.cuInit(0)
        if initResult != 0 {
            do { try driver.check(initResult, "cuInit") } catch { throw CUDAError.noDevice("\(error)") }
        }
        var count: Int32 = 0
        try driver.check(driver.cuDeviceGetCount(&count), "cuDeviceGetCount")
        guard deviceIndex < Int(count) else {
            throw CUDAError.noDevice("the driver (\(library.path)) reports \(count) devices; asked for index \(deviceIndex)")
        }
        var device: Int32 = 0
        try driver.check(driver.cuDeviceGet(&device, Int32(deviceIndex)), "cuDeviceGet(\(deviceIndex))")
        func attribute(_ a: CUDADriverAPI.Attribute) throws -> Int {
            var value: Int32 = 0
            try driver.check(driver.cuDeviceGetAttribute(&value, a.rawValue, device), "cuDeviceGetAttribute(\(a))")
            return Int(value)
        }
        var nameBuffer = [CChar](repeating: 0, count: 256)
        try driver.check(driver.cuDeviceGetName(&nameBuffer, 255, device), "cuDeviceGetName")
        var total = 0
        try driver.check(driver.cuDeviceTotalMem(&total, device), "cuDeviceTotalMem")
        var version: Int32 = 0
        try driver.check(driver.cuDriverGetVersion(&version), "cuDriverGetVersion")
        var context: OpaquePointer? = nil
        try driver.check(driver.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain")
        try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")

        self.driver = driver
        self.context = context
        self.deviceIndex = deviceIndex
        self.deviceName = String(decoding: nameBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.computeCapability = (try attribute(.computeCapabilityMajor), try attribute(.computeCapabilityMinor))
        self.multiprocessorCount = try attribute(.multiprocessorCount)
        self.maxSharedMemoryPerBlock = try attribute(.maxSharedMemoryPerBlockOptin)
        self.totalMemory = total
        self.driverVersion = Int(version)
        self.stream = try CUDAStream(driver: driver)
        self.allocator = CUDAMemoryPool(driver: driver)
    }

    /// Makes this context current on the calling thread (driver contexts are per thread).
    func makeCurrent() throws { try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent") }

    /// Waits until all work on the stream has finished (and surfaces asynchronous kernel faults).
    public func synchronize() throws {
        try makeCurrent()
        try driver.check(driver.cuStreamSynchronize(stream.handle), "cuStreamSynchronize")
    }

    /// Free and total device memory in bytes, as the driver reports them.
    public func memoryInfo() throws -> (free: Int, total: Int) {
        var free = 0, total = 0
        try driver.check(driver.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        return (free, total)
    }

    /// A device buffer of at least `bytes` bytes from the caching allocator.
    public func allocate(bytes: Int) throws -> CUDABuffer {
        try makeCurrent()
        let buffer = try allocator.allocate(bytes: bytes, context: self)
        if poisonsAllocations {
            try driver.check(driver.cuMemsetD16Async(buffer.address, 0xFFFF, buffer.byteCount / 2, stream.handle),
                             "cuMemsetD16Async")
        }
        return buffer
    }

    /// Bytes held by live tensors and by the allocator's cache.
    public var allocatorStatistics: (liveBytes: Int, cachedBytes: Int) { (allocator.liveBytes, allocator.cachedBytes) }

    /// The most device memory the allocator held at once (live + cached) since creation or `resetPeakMemory()`.
    public var peakAllocatorBytes: Int { allocator.peakBytes }
    public func resetPeakMemory() { allocator.resetPeak() }

    /// Returns cached device memory to the driver.
    public func releaseCachedMemory() throws { try allocator.releaseCache() }

    /// NVRTC, loaded on first use.
    func nvrtc() throws -> NVRTCAPI {
        try loadOnce(\._nvrtc) { try CUDAKernelCompiler.loadNVRTC() }
    }

    /// cuBLASLt, loaded on first use.
    func cublasLt() throws -> CUBLASLtAPI {
        try loadOnce(\._cublasLt) {
            try CUBLASLtAPI(CUDALibraryLoader.open(
                "cuBLASLt (libcublasLt)", sonames: CUDALibraryLoader.cublasLtNames,
                hint: "Install the CUDA toolkit or `pip install nvidia-cublas-cu12`, or set CUDA_HOME."))
        }
    }

    /// Whether cuDNN loads (convolutions and fused attention can use it).
    public var hasCUDNN: Bool { (try? cudnn()) != nil }

    /// cuDNN, loaded on first use (convolutions, fused attention).
    package func cudnn() throws -> CUDNNAPI {
        try loadOnce(\._cudnn) {
            try CUDNNAPI(CUDALibraryLoader.open(
                "cuDNN (libcudnn)", sonames: CUDALibraryLoader.cudnnNames, hint: "Install cuDNN 9 or `pip install nvidia-cudnn-cu12`."))
        }
    }

    /// The tuning choices of this card (`CUDATuningTable`), shared by every `CUDAKernels` on the context, with the
    /// record of earlier runs (`CUDATuningRecord`) as hints. Made on first use; tests may set their own.
    package var tuning: CUDATuningTable {
        get {
            if let table = lock.withLock({ _tuning }) { return table }
            let made = CUDATuningTable.onDisk(identity: tuningIdentity)
            return lock.withLock {
                if let table = _tuning { return table }
                _tuning = made
                return made
            }
        }
        set { lock.withLock { _tuning = newValue } }
    }

    /// This card's and its libraries' identity in the tuning record's file (`CUDATuningRecord.identity`).
    package var tuningIdentity: String {
        CUDATuningRecord.identity(deviceName: deviceName, computeCapability: computeCapability, multiprocessors: multiprocessorCount,
                                  driverVersion: driverVersion, cuBLASLtVersion: (try? cublasLt())?.cublasLtGetVersion(),
                                  cuDNNVersion: (try? cudnn())?.cudnnGetVersion(), kernels: CUDATuningRecord.kernelFingerprint)
    }
    private var _tuning: CUDATuningTable?

    /// The library API in `slot`, loaded by `load` the first time (under the lock, so once).
    private func loadOnce<API>(_ slot: ReferenceWritableKeyPath<CUDAContext, API?>, _ load: () throws -> API) throws -> API {
        try lock.withLock {
            if let api = self[keyPath: slot] { return api }
            let api = try load()
            self[keyPath: slot] = api
            return api
        }
    }

    /// One line per library: where it was loaded from and its version.
    public func describeLibraries() -> [String] {
        var lines = ["driver    \(driver.library.path) (CUDA \(driverVersion / 1000).\(driverVersion % 1000 / 10))"]
        do { let api = try nvrtc(); lines.append("NVRTC     \(api.library.path) (\(api.version.major).\(api.version.minor))") }
        catch { lines.append("NVRTC     missing: \(error)") }
        do { let api = try cublasLt(); lines.append("cuBLASLt  \(api.library.path) (\(api.cublasLtGetVersion()))") }
        catch { lines.append("cuBLASLt  missing: \(error)") }
        do { let api = try cudnn(); lines.append("cuDNN     \(api.library.path) (\(api.cudnnGetVersion()))") }
        catch { lines.append("cuDNN     missing: \(error)") }
        return lines
    }
}

/// A CUDA stream.
public final class CUDAStream: @unchecked Sendable {
    let handle: OpaquePointer?
    private let driver: CUDADriverAPI

    init(driver: CUDADriverAPI) throws {
        var handle: OpaquePointer? = nil
        try driver.check(driver.cuStreamCreate(&handle, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate")
        self.handle = handle
        self.driver = driver
    }

    deinit { _ = driver.cuStreamDestroy(handle) }
}

/// A CUDA event for timing work on a stream.
public final class CUDAEvent: @unchecked Sendable {
    let handle: OpaquePointer?
    private let driver: CUDADriverAPI

    public init(_ context: CUDAContext) throws {
        var handle: OpaquePointer? = nil
        try context.driver.check(context.driver.cuEventCreate(&handle, 0), "cuEventCreate")
        self.handle = handle
        self.driver = context.driver
    }

    /// Records the event on `stream`.
    public func record(on stream: CUDAStream) throws {
        try driver.check(driver.cuEventRecord(handle, stream.handle), "cuEventRecord")
    }

    /// Milliseconds between `start` and this event (waits for this event).
    public func milliseconds(since start: CUDAEvent) throws -> Double {
        try driver.check(driver.cuEventSynchronize(handle), "cuEventSynchronize")
        var ms: Float = 0
        try driver.check(driver.cuEventElapsedTime(&ms, start.handle, handle), "cuEventElapsedTime")
        return Double(ms)
    }

    /// Waits until the work recorded before this event has finished.
    public func synchronize() throws {
        try driver.check(driver.cuEventSynchronize(handle), "cuEventSynchronize")
    }

    /// Whether the work recorded before this event has finished (without waiting).
    public func isComplete() throws -> Bool {
        let result = driver.cuEventQuery(handle)
        if result == CUDAEvent.notReady { return false }
        try driver.check(result, "cuEventQuery")
        return true
    }

    /// CUDA_ERROR_NOT_READY: the event's work is still running.
    private static let notReady: CUDADriverAPI.Result = 600

    deinit { _ = driver.cuEventDestroy(handle) }
}

/// A pthread mutex (FoundationEssentials has no NSLock).
final class CUDALock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}

/// A caching device allocator: freed buffers go to per-size free lists and are handed out again,
/// so steady-state denoising does no `cuMemAlloc`/`cuMemFree`.
///
/// Sizes are rounded up (512 B granules below 1 MiB, 2 MiB granules above) so that similar requests
/// share lists; a request with no cached block of its size takes the smallest cached block up to twice as
/// large before a new one is allocated (blocks are not split). Reuse is safe because all work runs on one stream: a buffer freed after a kernel
/// was queued is only touched again by work queued later. When `cuMemAlloc` reports out-of-memory,
/// the cache is emptied and the allocation retried once before `CUDAError.outOfMemory` is thrown.
final class CUDAMemoryPool: @unchecked Sendable {
    private let driver: CUDADriverAPI
    private let lock = CUDALock()
    private var freeLists: [Int: [UInt64]] = [:]
    private(set) var cachedBytes = 0
    private(set) var liveBytes = 0
    /// The most bytes held (live + cached) since creation or `resetPeak()`: what the process took from the card.
    private(set) var peakBytes = 0

    /// Addresses handed out while a CUDA graph is being captured (nil when not capturing).
    private var captured: Set<UInt64>?

    func beginCapture() { lock.withLock { captured = [] } }

    /// Whether a CUDA graph is being captured (no synchronising work, such as timing, may run then).
    var isCapturing: Bool { lock.withLock { captured != nil } }

    /// Ends capture bookkeeping: every buffer the captured work used that is back in the free lists is taken
    /// out of circulation and returned (the graph owns it; it replays on those addresses).
    func endCapture() -> [(address: UInt64, byteCount: Int)] {
        lock.withLock {
            guard let used = captured else { return [] }
            captured = nil
            var owned: [(address: UInt64, byteCount: Int)] = []
            for (size, addresses) in freeLists {
                let keep = addresses.filter { !used.contains($0) }
                for address in addresses where used.contains(address) { owned.append((address, size)) }
                freeLists[size] = keep
                cachedBytes -= (addresses.count - keep.count) * size
                liveBytes += (addresses.count - keep.count) * size
            }
            return owned
        }
    }

    func resetPeak() { lock.withLock { peakBytes = liveBytes + cachedBytes } }

    init(driver: CUDADriverAPI) { self.driver = driver }

    static func roundedSize(_ bytes: Int) -> Int {
        let granule = bytes < (1 << 20) ? 512 : (2 << 20)
        return max(granule, (bytes + granule - 1) / granule * granule)
    }

    func allocate(bytes: Int, context: CUDAContext) throws -> CUDABuffer {
        let size = Self.roundedSize(bytes)
        let cached: (address: UInt64, size: Int)? = lock.withLock {
            // The exact size class, else the smallest cached block of at most twice the size (no splitting: the
            // block keeps its size and returns to its own list), before asking the driver for more memory.
            let fit = freeLists[size]?.isEmpty == false ? size
                : freeLists.filter { $0.key > size && $0.key <= 2 * size && !$0.value.isEmpty }.keys.min()
            guard let fit, let address = freeLists[fit]?.popLast() else { return nil }
            cachedBytes -= fit
            liveBytes += fit
            captured?.insert(address)
            return (address, fit)
        }
        if let cached { return CUDABuffer(address: cached.address, byteCount: cached.size, pool: self) }
        var address: UInt64 = 0
        var result = driver.cuMemAlloc(&address, size)
        if result == CUDADriverAPI.outOfMemory {
            let released = try releaseCache()
            result = driver.cuMemAlloc(&address, size)
            if result == CUDADriverAPI.outOfMemory {
                let info = (try? context.memoryInfo()) ?? (free: 0, total: 0)
                throw CUDAError.outOfMemory(requestedBytes: bytes, freeBytes: info.free, totalBytes: info.total,
                                            cachedBytes: released)
            }
        }
        try driver.check(result, "cuMemAlloc(\(size) bytes)")
        lock.withLock {
            liveBytes += size
            peakBytes = max(peakBytes, liveBytes + cachedBytes)
            captured?.insert(address)
        }
        return CUDABuffer(address: address, byteCount: size, pool: self)
    }

    func recycle(address: UInt64, byteCount: Int) {
        lock.withLock {
            freeLists[byteCount, default: []].append(address)
            cachedBytes += byteCount
            liveBytes -= byteCount
        }
    }

    /// Frees every cached buffer (after the device is idle); returns the bytes released.
    @discardableResult
    func releaseCache() throws -> Int {
        try driver.check(driver.cuCtxSynchronize(), "cuCtxSynchronize")
        let lists: [Int: [UInt64]] = lock.withLock {
            defer { freeLists = [:]; cachedBytes = 0 }
            return freeLists
        }
        var released = 0
        for (size, addresses) in lists {
            for address in addresses { _ = driver.cuMemFree(address); released += size }
        }
        return released
    }
}

/// Device memory owned by Swift: returned to the pool when the last reference goes away.
public final class CUDABuffer: @unchecked Sendable {
    /// The `CUdeviceptr`.
    public let address: UInt64
    public let byteCount: Int
    private let pool: CUDAMemoryPool

    init(address: UInt64, byteCount: Int, pool: CUDAMemoryPool) {
        self.address = address
        self.byteCount = byteCount
        self.pool = pool
    }

    deinit { pool.recycle(address: address, byteCount: byteCount) }
}

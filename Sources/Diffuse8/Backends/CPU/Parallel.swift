import Dispatch

/// Splits `0..<count` into chunks run on all cores (DispatchQueue.concurrentPerform).
@inline(__always)
func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = min(CPUConfiguration.threadCount, max(1, count / max(1, minChunk)))
    if workers <= 1 { body(0..<count); return }
    let chunk = (count + workers - 1) / workers
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        let start = w * chunk
        let end = min(count, start + chunk)
        if start < end { body(start..<end) }
    }
}

/// Runs `body(worker)` for `workers` workers concurrently; pair with `TaskCounter` for dynamic scheduling.
@inline(__always)
func runOnWorkers(_ workers: Int, _ body: (Int) -> Void) {
    if workers <= 1 { body(0); return }
    DispatchQueue.concurrentPerform(iterations: workers, execute: body)
}

/// Like `parallelFor`, but hands out `0..<count` one item at a time from a shared counter, so a
/// worker slowed down by other processes does not hold up the rest.
@inline(__always)
func parallelForDynamic(_ count: Int, _ body: (Int) -> Void) {
    let workers = min(CPUConfiguration.threadCount, count)
    if workers <= 1 { for i in 0..<count { body(i) }; return }
    let counter = TaskCounter()
    runOnWorkers(workers) { _ in
        while let i = counter.next(below: count) { body(i) }
    }
}

/// A pthread mutex at a fixed address (Swift may move or copy a stored `pthread_mutex_t`).
final class PthreadMutex: @unchecked Sendable {
    private let pointer: UnsafeMutablePointer<pthread_mutex_t>
    init() {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: pthread_mutex_t())
        pthread_mutex_init(pointer, nil)
    }
    deinit {
        pthread_mutex_destroy(pointer)
        pointer.deallocate()
    }
    func lock() { pthread_mutex_lock(pointer) }
    func unlock() { pthread_mutex_unlock(pointer) }
}

/// A mutex-protected counter handing out task indices.
final class TaskCounter: @unchecked Sendable {
    private var value = 0
    private let mutex = PthreadMutex()

    /// The next index, or nil once `limit` indices have been handed out.
    func next(below limit: Int) -> Int? {
        mutex.lock()
        defer { mutex.unlock() }
        guard value < limit else { return nil }
        value += 1
        return value - 1
    }
}

/// Reusable 64-byte-aligned scratch buffers (packing panels, attention score blocks), so kernels
/// don't pay for fresh zeroed pages on every call. Buffers go back to the pool after use.
enum ScratchPool {
    nonisolated(unsafe) private static var free: [(pointer: UnsafeMutablePointer<Float>, count: Int)] = []
    private static let mutex = PthreadMutex()

    static func with<R>(count: Int, _ body: (UnsafeMutablePointer<Float>) -> R) -> R {
        let buffer = take(count)
        defer { give(buffer) }
        return body(buffer.pointer)
    }

    private static func take(_ count: Int) -> (pointer: UnsafeMutablePointer<Float>, count: Int) {
        mutex.lock()
        if let index = free.firstIndex(where: { $0.count >= count }) {
            let buffer = free.remove(at: index)
            mutex.unlock()
            return buffer
        }
        mutex.unlock()
        let raw = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Float>.stride, alignment: 64)
        return (raw.bindMemory(to: Float.self, capacity: count), count)
    }

    private static func give(_ buffer: (pointer: UnsafeMutablePointer<Float>, count: Int)) {
        mutex.lock()
        defer { mutex.unlock() }
        if free.count < 4 * CPUConfiguration.threadCount + 4 {
            free.append(buffer)
        } else {
            buffer.pointer.deallocate()
        }
    }
}

/// Process-wide CPU backend settings.
public enum CPUConfiguration {
    /// Worker threads used by the CPU kernels; defaults to the number of active cores.
    nonisolated(unsafe) public static var threadCount: Int = activeProcessorCount()
}

#if canImport(Glibc)
import Glibc
private func activeProcessorCount() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
#else
import Darwin
private func activeProcessorCount() -> Int { max(1, Int(sysconf(_SC_NPROCESSORS_ONLN))) }
#endif

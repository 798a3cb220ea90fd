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

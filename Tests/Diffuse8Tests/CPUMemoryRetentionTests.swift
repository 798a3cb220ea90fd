import XCTest
@testable import Diffuse8
#if canImport(Glibc)
import Glibc
#endif

/// Freed activation memory stays in the process (`CPUMemoryRetention`): a second round of the same allocations
/// touches pages that are already mapped. The reference is the kernel's own count of this thread's page faults
/// (`getrusage(RUSAGE_THREAD)`); with glibc's default, sliding thresholds the second round of 1 MiB buffers comes from
/// a heap that has to grow (the first round was mapped separately and unmapped) and faults every page in.
final class CPUMemoryRetentionTests: XCTestCase {
    func testFreedBuffersAreReusedWithoutPageFaults() throws {
        #if canImport(Glibc)
        _ = CPUBackend.shared
        guard CPUMemoryRetention.isApplied else {
            throw XCTSkip("glibc's malloc thresholds are left alone here (GLIBC_TUNABLES or DIFFUSE8_KEEP_FREED_MEMORY=off)")
        }
        let bytes = 1 << 20, count = 6
        func faults() -> Int {
            var usage = rusage()
            getrusage(__rusage_who_t(1), &usage)  // RUSAGE_THREAD (Linux; not visible without _GNU_SOURCE)
            return usage.ru_minflt + usage.ru_majflt
        }
        /// Allocates and fills `count` buffers, frees them, and returns the page faults of the filling.
        func round() -> Int {
            let buffers = (0..<count).map { _ in UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 16) }
            let before = faults()
            for buffer in buffers { buffer.initializeMemory(as: UInt8.self, repeating: 1, count: bytes) }
            let after = faults()
            for buffer in buffers { buffer.deallocate() }
            return after - before
        }
        _ = round()
        let pages = count * bytes / Int(getpagesize())
        let second = round()
        XCTAssertLessThan(second, pages / 8, "the second round faulted \(second) of its \(pages) pages in again")
        #else
        throw XCTSkip("the allocator settings are glibc's")
        #endif
    }
}

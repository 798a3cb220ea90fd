#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Diffuse8
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Wall-clock timing of a closure: `warmup` untimed runs, then `iterations` timed runs.
/// Not a test: the numbers depend on the machine and its load.
public struct BenchmarkResult: Sendable, CustomStringConvertible {
    public var name: String
    /// Each timed run, in milliseconds, in the order they ran.
    public var milliseconds: [Double]
    /// CPU time of the whole process (all threads) per timed run, in milliseconds. Divided by the wall
    /// time it shows how many cores the runs really got — a check on a shared, loaded machine.
    public var cpuMilliseconds: [Double] = []

    public var median: Double {
        let sorted = milliseconds.sorted()
        guard !sorted.isEmpty else { return .nan }
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }
    public var min: Double { milliseconds.min() ?? .nan }
    public var max: Double { milliseconds.max() ?? .nan }

    public var description: String {
        "\(name): median \(format(median)) ms, min \(format(min)) ms, max \(format(max)) ms (\(milliseconds.count) runs)"
            + (cpuMilliseconds.isEmpty ? "" : ", cores used \(format(coresUsed))")
    }

    /// One JSON object: name, median_ms, min_ms, max_ms, runs_ms.
    public var json: String {
        let runs = milliseconds.map(format).joined(separator: ", ")
        return "{\"name\": \"\(name)\", \"median_ms\": \(format(median)), \"min_ms\": \(format(min)), "
            + "\"max_ms\": \(format(max)), \"cores_used\": \(format(coresUsed)), \"runs_ms\": [\(runs)]}"
    }

    /// Mean CPU time over mean wall time of the timed runs.
    public var coresUsed: Double { cpuMilliseconds.reduce(0, +) / Swift.max(1e-9, milliseconds.reduce(0, +)) }

    private func format(_ v: Double) -> String {
        let rounded = (v * 1000).rounded() / 1000
        return "\(rounded)"
    }
}

public enum Benchmark {
    /// Times `body`: `warmup` untimed calls, then `iterations` timed calls (ContinuousClock).
    public static func measure(_ name: String, warmup: Int = 1, iterations: Int = 5, _ body: () throws -> Void) rethrows -> BenchmarkResult {
        for _ in 0..<warmup { try body() }
        let clock = ContinuousClock()
        var runs: [Double] = [], cpuRuns: [Double] = []
        for _ in 0..<max(1, iterations) {
            let cpuStart = processCPUMilliseconds()
            let elapsed = try clock.measure { try body() }
            cpuRuns.append(processCPUMilliseconds() - cpuStart)
            runs.append(Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) * 1e-15)
        }
        return BenchmarkResult(name: name, milliseconds: runs, cpuMilliseconds: cpuRuns)
    }

    /// CPU time consumed by this process so far (all threads), in milliseconds.
    public static func processCPUMilliseconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
        return Double(t.tv_sec) * 1000 + Double(t.tv_nsec) * 1e-6
    }
}

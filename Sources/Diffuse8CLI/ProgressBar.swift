#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress bar on stderr: `step 12/30 [#####-----] 3.41 it/s, ETA 5.3s`.
struct ProgressBar {
    let label: String
    let width = 24
    private var start: UInt64 = ProgressBar.nanoseconds()

    init(label: String) { self.label = label }

    static func nanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    mutating func restart() { start = Self.nanoseconds() }

    /// Seconds since the bar started.
    var elapsed: Double { Double(Self.nanoseconds() - start) / 1e9 }

    func update(step: Int, of total: Int) {
        let seconds = elapsed
        let rate = Double(step) / max(seconds, 1e-9)
        let eta = Double(total - step) / max(rate, 1e-9)
        let filled = total > 0 ? width * step / total : width
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let prefix = label.isEmpty ? "" : label + " "
        var line = "\r\(prefix)step \(step)/\(total) [\(bar)] \(format(rate)) it/s, ETA \(format(eta))s"
        if step == total { line += " (\(format(seconds))s)\n" }
        FileHandleStderr.write(line)
    }

    private func format(_ v: Double) -> String {
        let scaled = (v * 100).rounded() / 100
        return String(scaled)
    }
}

/// Unbuffered writes to standard error.
enum FileHandleStderr {
    static func write(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

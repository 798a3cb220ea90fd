/// Which kernel, library plan or path runs a given problem, decided once per distinct problem and shared by every
/// layer of the process (one table per `CUDAContext`), with the choices of earlier runs on the same card
/// (`CUDATuningRecord`) as hints.
///
/// A problem is a `key`: a string naming everything the decision depends on (e.g. the GEMM's m, n, k, bias,
/// residual, format, storage type and alignment), never a layer. A choice is a short string its user encodes and
/// decodes. Order of use (`decide`): the choice already made in this process; else the recorded one, if it decodes
/// and runs (when it throws, it is dropped and the problem is timed); else the candidates are measured. Choices made
/// without timing (inside a CUDA graph capture) are kept for the process but never recorded.
package final class CUDATuningTable: @unchecked Sendable {
    /// Where a choice came from.
    package enum Source: Sendable, Equatable {
        /// Measured in this process.
        case timed
        /// Recorded by an earlier run, and it ran here.
        case recorded
        /// Taken without timing (the first candidate that ran inside a capture); not recorded.
        case untimed
    }

    /// What a measurement found: the winner, whether it was timed, and whether the measurement already ran it for the
    /// call (then `decide` does not run it again).
    package struct Measured<Choice> {
        package var choice: Choice
        package var timed: Bool
        package var ran: Bool
        package init(_ choice: Choice, timed: Bool, ran: Bool) {
            self.choice = choice
            self.timed = timed
            self.ran = ran
        }
    }

    /// Counts for reports: problems timed here, taken from the record, and recorded choices dropped (they did not
    /// decode or failed to run).
    package struct Statistics: Sendable, Equatable {
        package var timed = 0, recorded = 0, untimed = 0, rejected = 0
        package init() {}
    }

    private var decisions: [String: (choice: String, source: Source)] = [:]
    /// Recorded choices not yet used in this process.
    private var hints: [String: String]
    private var counts = Statistics()
    /// Called with every choice worth keeping (hints and recorded or timed choices) when a new one is timed.
    private let persist: (([String: String]) -> Void)?
    private let lock = CUDALock()

    /// A table starting from `hints` (a record's entries); `persist` saves the table's choices when they change.
    package init(hints: [String: String] = [:], persist: (([String: String]) -> Void)? = nil) {
        self.hints = hints
        self.persist = persist
    }

    /// The table of a card: hints from the record in the kernel cache folder, saved back there. Without a writable
    /// folder, or with `DIFFUSE8_CUDA_TUNING_CACHE=off`, a table that lives for the process only.
    package static func onDisk(identity: @autoclosure () -> String) -> CUDATuningTable {
        guard CUDATuningRecord.isEnabled, let directory = CUDAKernelCompiler.cacheDirectory() else { return CUDATuningTable() }
        let identity = identity()
        let record = CUDATuningRecord.load(from: directory, identity: identity)
        return CUDATuningTable(hints: record?.entries ?? [:]) { entries in
            CUDATuningRecord(identity: identity, entries: entries).save(in: directory)
        }
    }

    package var statistics: Statistics { lock.withLock { counts } }

    /// The choice for `key` made in this process (any source), if any.
    package func decided(_ key: String) -> (choice: String, source: Source)? { lock.withLock { decisions[key] } }

    /// One line for reports, e.g. "tuning: 31 problems timed, 0 from the record".
    package var summary: String {
        let s = statistics
        var line = "tuning: \(s.timed) problems timed, \(s.recorded) from the record"
        if s.untimed > 0 { line += ", \(s.untimed) untimed (graph capture)" }
        if s.rejected > 0 { line += ", \(s.rejected) recorded choices dropped" }
        return line
    }

    /// Runs the problem `key` with its choice (see the type's notes) and returns the choice. `run` queues the work
    /// with a choice; `measure` picks one when neither this process nor the record has it.
    @discardableResult
    package func decide<Choice>(_ key: String, encode: (Choice) -> String, decode: (String) -> Choice?,
                                run: (Choice) throws -> Void, measure: () throws -> Measured<Choice>) throws -> Choice {
        if let known = lock.withLock({ decisions[key] }), let choice = decode(known.choice) {
            try run(choice)
            return choice
        }
        if let choice = useHint(key, accept: { hint in decode(hint).flatMap { (try? run($0)) != nil ? $0 : nil } }) {
            return choice
        }
        let measured = try measure()
        record(key, encode(measured.choice), measured.timed ? .timed : .untimed)
        if !measured.ran { try run(measured.choice) }
        return measured.choice
    }

    /// The recorded choice for `key` as `accept` takes it (it decodes the hint and, where it must, checks that it
    /// runs; nil drops it): then it is this process's choice, from the record. A hint is offered once.
    package func useHint<Choice>(_ key: String, accept: (String) -> Choice?) -> Choice? {
        guard let hint = takeHint(key) else { return nil }
        guard let choice = accept(hint) else {
            rejectHint(key)
            return nil
        }
        record(key, hint, .recorded)
        return choice
    }

    /// The recorded choice for `key` (removed from the hints: it is either confirmed with `record` or dropped), for a
    /// user that confirms it later than `useHint` can.
    package func takeHint(_ key: String) -> String? {
        lock.withLock { hints.removeValue(forKey: key) }
    }

    /// Keeps `choice` for `key`; a timed choice is saved with the others.
    package func record(_ key: String, _ choice: String, _ source: Source) {
        let snapshot: [String: String]? = lock.withLock {
            decisions[key] = (choice, source)
            switch source {
            case .timed: counts.timed += 1
            case .recorded: counts.recorded += 1
            case .untimed: counts.untimed += 1
            }
            guard source == .timed, persist != nil else { return nil }
            return persistentEntries()
        }
        if let snapshot { persist?(snapshot) }
    }

    /// A recorded choice for `key` that decoded but failed to run, counted as dropped (for users of `takeHint`).
    package func rejectHint(_ key: String) {
        lock.withLock { counts.rejected += 1 }
    }

    /// The choices worth keeping across runs: the record's unused hints, and those timed or confirmed here.
    private func persistentEntries() -> [String: String] {
        var entries = hints
        for (key, decision) in decisions where decision.source != .untimed { entries[key] = decision.choice }
        return entries
    }

    /// The fastest of `candidates` by `time` (milliseconds; a candidate that throws drops out), and the last error
    /// when none ran.
    package static func fastest<Candidate>(_ candidates: [Candidate], time: (Candidate) throws -> Double)
        -> (best: (candidate: Candidate, milliseconds: Double)?, lastError: Error?) {
        var best: (candidate: Candidate, milliseconds: Double)?
        var lastError: Error?
        for candidate in candidates {
            do {
                let milliseconds = try time(candidate)
                if milliseconds < best?.milliseconds ?? .infinity { best = (candidate, milliseconds) }
            } catch {
                lastError = error
            }
        }
        return (best, lastError)
    }
}

import Diffuse8
import Foundation

/// What the running job is doing, for `GET /sdapi/v1/progress` and `POST /sdapi/v1/interrupt`. The worker thread
/// writes it after every denoising step; request handlers read it. All access goes through one lock.
public final class ProgressTracker: @unchecked Sendable {
    /// A copy of the state at one moment.
    public struct Snapshot: Sendable {
        public var job = ""
        public var jobCount = 0
        public var jobNumber = 0
        public var jobTimestamp = "0"
        public var samplingStep = 0
        public var samplingSteps = 0
        public var interrupted = false
        /// Fraction of the whole request (all its images) done, 0...1; 0 when idle.
        public var progress = 0.0
        /// Estimated seconds left, from the time spent so far.
        public var etaRelative = 0.0
        /// The latest latents of the running image ([1, C, h, w]), for a preview.
        public var latents: Tensor?
        public var isActive: Bool { !job.isEmpty }
    }

    private let lock = NSLock()
    private var state = Snapshot()
    private var started = ContinuousClock.now
    private var cancellation: GenerationCancellation?
    /// Called on the worker thread after each step (outside the lock); tests use it to act at an exact step.
    private let stepObserver: (@Sendable (Int) -> Void)?

    public init(stepObserver: (@Sendable (Int) -> Void)? = nil) {
        self.stepObserver = stepObserver
    }

    public var snapshot: Snapshot {
        lock.withLock {
            var copy = state
            if copy.isActive, copy.progress > 0 {
                let elapsed = Self.seconds(ContinuousClock.now - started)
                copy.etaRelative = max(0, elapsed / copy.progress - elapsed)
            }
            return copy
        }
    }

    /// A request of `images` images × `steps` steps starts; `cancellation` is what `interrupt()` cancels.
    public func begin(job: String, images: Int, steps: Int, cancellation: GenerationCancellation) {
        lock.withLock {
            state = Snapshot()
            state.job = job
            state.jobCount = images
            state.samplingSteps = steps
            state.jobTimestamp = Self.timestamp()
            started = ContinuousClock.now
            self.cancellation = cancellation
        }
    }

    /// Image `index` (0-based) of the request starts.
    public func beginImage(_ index: Int) {
        lock.withLock {
            state.jobNumber = index
            state.samplingStep = 0
            state.latents = nil
            updateProgress()
        }
    }

    /// A denoising step finished.
    public func step(_ step: Int, of total: Int) {
        lock.withLock {
            state.samplingStep = step
            state.samplingSteps = total
            updateProgress()
        }
        stepObserver?(step)
    }

    public func setLatents(_ latents: Tensor) {
        lock.withLock { state.latents = latents }
    }

    public func end() {
        lock.withLock {
            state = Snapshot()
            cancellation = nil
        }
    }

    /// Stops the running job at its next step. Returns whether a job was running.
    @discardableResult
    public func interrupt() -> Bool {
        lock.withLock {
            guard let cancellation else { return false }
            cancellation.cancel()
            state.interrupted = true
            return true
        }
    }

    private func updateProgress() {
        let perImage = state.samplingSteps > 0 ? Double(state.samplingStep) / Double(state.samplingSteps) : 0
        state.progress = state.jobCount > 0 ? min(1, (Double(state.jobNumber) + perImage) / Double(state.jobCount)) : 0
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    /// A1111's `job_timestamp` layout: yyyyMMddHHmmss (UTC).
    static func timestamp() -> String {
        var t = time(nil)
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))"
    }
}

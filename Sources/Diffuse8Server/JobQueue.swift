import Dispatch

/// Why a job was not run.
public enum JobQueueError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `capacity` jobs already wait behind the running one (answered 503 with `Retry-After`).
    case full(capacity: Int)
    /// The server is shutting down: new jobs are refused and waiting ones are failed.
    case shuttingDown

    public var description: String {
        switch self {
        case .full(let capacity): return "the queue is full (\(capacity) jobs waiting); retry later"
        case .shuttingDown: return "the server is shutting down"
        }
    }
}

/// Runs jobs one at a time, in arrival order, on one dedicated thread (one queue per device: a generation uses the
/// whole CPU or GPU, so two at once would only both be slower). At most `capacity` jobs wait; more are refused at
/// once instead of piling up memory and latency.
public actor JobQueue {
    public let capacity: Int
    private var running = false
    private var waiting: [CheckedContinuation<Void, any Error>] = []
    private var accepting = true
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []
    private let worker = DispatchQueue(label: "diffuse8.generation", qos: .userInitiated)
    /// Called with the number of waiting jobs whenever it changes (the `/metrics` queue depth).
    private let onDepthChange: @Sendable (Int) -> Void

    public init(capacity: Int, onDepthChange: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.capacity = max(0, capacity)
        self.onDepthChange = onDepthChange
    }

    /// Jobs waiting behind the running one.
    public var depth: Int { waiting.count }
    /// Whether a job is running.
    public var isBusy: Bool { running }

    /// Waits for its turn, then runs `work` on the worker thread and returns its result. Throws
    /// `JobQueueError.full` at once when `capacity` jobs already wait, `.shuttingDown` during shutdown.
    public func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        guard accepting else { throw JobQueueError.shuttingDown }
        if running {
            guard waiting.count < capacity else { throw JobQueueError.full(capacity: capacity) }
            try await withCheckedThrowingContinuation { waiting.append($0); onDepthChange(waiting.count) }
            // `finishJob` handed the turn over with `running` still true.
        } else {
            running = true
        }
        let result: Result<T, any Error> = await withCheckedContinuation { continuation in
            worker.async { continuation.resume(returning: Result { try work() }) }
        }
        finishJob()
        return try result.get()
    }

    private func finishJob() {
        if waiting.isEmpty {
            running = false
            for waiter in idleWaiters { waiter.resume() }
            idleWaiters.removeAll()
        } else {
            let next = waiting.removeFirst()
            onDepthChange(waiting.count)
            next.resume()
        }
    }

    /// Stops accepting jobs, fails the waiting ones with `.shuttingDown`, and returns when the running job has
    /// finished.
    public func shutDown() async {
        accepting = false
        let failed = waiting
        waiting.removeAll()
        onDepthChange(0)
        for job in failed { job.resume(throwing: JobQueueError.shuttingDown) }
        if running {
            await withCheckedContinuation { idleWaiters.append($0) }
        }
    }
}

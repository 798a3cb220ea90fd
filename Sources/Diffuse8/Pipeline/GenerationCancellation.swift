import Foundation

/// A flag another thread sets to stop a generation at the next denoising step (a server's "interrupt").
/// The pipeline checks it before every step and then throws `GenerationCancelled`.
public final class GenerationCancellation: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false

    public init() {}

    /// Asks the generation to stop before its next step.
    public func cancel() { lock.withLock { cancelled = true } }

    public var isCancelled: Bool { lock.withLock { cancelled } }

    /// Throws `GenerationCancelled` once `cancel()` was called.
    public func check() throws {
        if isCancelled { throw GenerationCancelled() }
    }
}

/// Thrown by a generation whose `GenerationCancellation` was cancelled.
public struct GenerationCancelled: Error, CustomStringConvertible, Sendable {
    public init() {}
    public var description: String { "the generation was interrupted" }
}

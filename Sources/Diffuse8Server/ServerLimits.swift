/// Bounds every request is checked against before it reaches the job queue. Defaults suit a CPU server; a GPU
/// server may raise them (`diffuse8 serve --max-size ... --max-steps ...`).
public struct ServerLimits: Sendable, Equatable {
    /// Largest accepted request body, in bytes (larger bodies get 413 before they are read).
    public var maxBodyBytes = 8 << 20
    /// Largest width or height in pixels.
    public var maxImageSide = 2048
    /// Most denoising steps per image (A1111's UI allows 150).
    public var maxSteps = 150
    /// Most images per request (`batch_size` × `n_iter`).
    public var maxImagesPerRequest = 16
    /// Longest prompt or negative prompt, in characters.
    public var maxPromptCharacters = 20_000
    /// Jobs that may wait behind the running one; more get 503 with `Retry-After`.
    public var maxQueuedJobs = 16

    public init() {}
}

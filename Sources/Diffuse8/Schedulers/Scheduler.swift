/// A denoising scheduler with diffusers semantics: it turns the UNet's output at one timestep into
/// the next latent sample. Implementations match the diffusers class named in their doc comment and
/// are built from a diffusers `scheduler_config.json`.
public protocol Scheduler {
    /// The model timesteps of the run, first to last (diffusers' `scheduler.timesteps`).
    var timesteps: [Double] { get }
    /// Multiplier of the initial unit-variance noise (diffusers' `init_noise_sigma`).
    var initNoiseSigma: Float { get }
    /// Input scaling before the UNet call at step `stepIndex` (diffusers' `scale_model_input`).
    func scaleModelInput(_ sample: Tensor, stepIndex: Int) -> Tensor
    /// One denoising step (diffusers' `step(...).prev_sample`). Ancestral schedulers draw their noise
    /// from `generator`, in the order diffusers does.
    mutating func step(modelOutput: Tensor, stepIndex: Int, sample: Tensor, generator: inout TorchGenerator) -> Tensor
    /// Every step of the run as coefficients (`SamplerStep`) for loops that run off the host, or nil when a step is
    /// not linear in the latents and model outputs (default).
    func samplerSteps() -> [SamplerStep]?
}

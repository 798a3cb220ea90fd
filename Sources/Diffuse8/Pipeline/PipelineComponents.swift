/// What `StableDiffusionPipeline` needs of its three networks, whatever backend runs them. The scheduler
/// loop, prompt handling and guidance stay on the host in FP32 and are shared by every backend; a backend
/// only supplies these three evaluations (CPU: the FP32 models themselves; CUDA: the same models on a `CUDABackend`
/// through `CUDANoisePredictor`, `CUDACLIPTextModel` and `CUDALatentDecoder`).

/// The parts of a CLIP text encoder's output that prompt encoding uses, on the host.
public struct TextEncoderOutput: Sendable {
    /// [batch, tokens, hidden] after `final_layer_norm` (SD1.x/2.x conditioning).
    public var lastHiddenState: Tensor
    /// [batch, tokens, hidden]: the penultimate layer's output, before the final norm (SDXL conditioning).
    public var penultimateHiddenState: Tensor
    /// [batch, width]: `text_embeds` for `CLIPTextModelWithProjection`, else the pooled output.
    public var pooled: Tensor
}

/// A CLIP text encoder (transformers' `CLIPTextModel(WithProjection)` semantics).
public protocol TextEncoder: AnyObject {
    var configuration: CLIPTextConfiguration { get }
    /// Encodes equal-length token id rows (normally 77 each).
    func encode(_ tokenIDs: [[Int]]) throws -> TextEncoderOutput
}

/// A conditional UNet (diffusers' `UNet2DConditionModel.forward(...).sample` semantics).
public protocol NoisePredictor: AnyObject {
    var configuration: UNetConfiguration { get }
    /// A function that evaluates the UNet on latents [B, C, h, w] at a timestep with `conditioning`, for
    /// latents of `sampleShape`. Backends prepare here, once per generation, what every step reuses
    /// (device copies of the conditioning, a captured CUDA graph).
    func makeDenoiser(conditioning: UNetConditioning, sampleShape: [Int]) throws -> (_ sample: Tensor, _ timestep: Float) throws -> Tensor
    /// Runs a whole sampling loop on the device and returns the final latents, or nil when the backend has no such
    /// loop (the default; the pipeline then steps on the host). `progress(step)` is called as steps finish.
    func runSamplingLoop(_ plan: SamplingPlan, conditioning: UNetConditioning, progress: ((Int) -> Void)?) throws -> Tensor?
}

/// A whole denoising loop with classifier-free guidance, described by numbers (`SamplerStep` per step) so that a
/// backend can run it without the host in the loop.
public struct SamplingPlan: Sendable {
    /// Initial latents (already multiplied by `init_noise_sigma`), [1, C, h, w].
    public var latents: Tensor
    /// The model timestep of each step.
    public var timesteps: [Float]
    public var steps: [SamplerStep]
    /// Each step's noise (latents' shape), drawn in advance in the order the host loop draws it; nil where unused.
    public var noise: [Tensor?]
    /// CFG scale; guidance is on when the conditioning is `guided` ([negative, positive] batch).
    public var guidanceScale: Float
}

extension NoisePredictor {
    public func runSamplingLoop(_ plan: SamplingPlan, conditioning: UNetConditioning,
                                progress: ((Int) -> Void)?) throws -> Tensor? { nil }
}

/// A VAE decoder (diffusers' `AutoencoderKL.decode(z).sample` semantics, z already divided by the scaling factor).
public protocol LatentDecoder: AnyObject {
    var configuration: VAEConfiguration { get }
    /// [N, latent_channels, h, w] → [N, out_channels, h·f, w·f], roughly in [-1, 1].
    func decodeLatents(_ z: Tensor) throws -> Tensor
}

extension CLIPTextModel: TextEncoder {
    public func encode(_ tokenIDs: [[Int]]) throws -> TextEncoderOutput {
        let output = try forward(CPUBackend.shared, tokenIDs: tokenIDs)
        return TextEncoderOutput(lastHiddenState: output.lastHiddenState, penultimateHiddenState: output.penultimateHiddenState,
                                 pooled: output.textEmbeds ?? output.pooledOutput)
    }
}

extension UNet2DConditionModel: NoisePredictor {
    public func makeDenoiser(conditioning c: UNetConditioning, sampleShape: [Int]) throws -> (Tensor, Float) throws -> Tensor {
        { sample, timestep in
            try self.evaluate(sample: sample, timesteps: [timestep], encoderHiddenStates: c.encoderHiddenStates,
                              textEmbeds: c.textEmbeds, timeIds: c.timeIds)
        }
    }
}

extension AutoencoderKL: LatentDecoder {
    public func decodeLatents(_ z: Tensor) throws -> Tensor { try decode(CPUBackend.shared, z) }
}

/// Where the networks run.
public enum ComputeDevice: String, CaseIterable, Sendable {
    /// FP32 on the CPU (every platform).
    case cpu
    /// FP16 (or BF16) on an NVIDIA GPU through the CUDA backend (driver, NVRTC, cuBLASLt (+ cuDNN) loaded at run time).
    case cuda
}

import Diffuse8

/// Where a GPU image parts from the CPU image: the CPU pipeline's denoising trajectory (every step's UNet input and
/// output) replayed through the CUDA UNet step by step, and the GPU's own host-stepped trajectory compared with the
/// CPU's at every step. A per-step UNet error at FP16 level with a growing trajectory gap means the sampler amplifies
/// rounding (a property of the scheduler, not a defect); a single step with a large UNet error points at that step.
public enum CUDATrajectoryCheck {
    public struct Step: Sendable {
        public let index: Int
        public let timestep: Float
        /// CUDA UNet vs CPU UNet on the CPU's input of this step (relative L2).
        public let unetRelativeL2: Double
        /// The GPU trajectory's UNet input vs the CPU's at this step (relative L2).
        public let trajectoryRelativeL2: Double
    }

    public struct Result: Sendable {
        public let directory: String
        public let steps: [Step]
        /// The UNet bar on random inputs (`CUDAUNetCheck.parityLimit`, or the quantized limit); along a trajectory the
        /// last steps' small ε can sit a few times above it.
        public let limit: Double
        /// Final latents, GPU trajectory vs CPU trajectory (relative L2).
        public let finalGap: Double
        /// The control: the CPU loop once more with every UNet output perturbed by Gaussian noise of the GPU's measured
        /// per-step relative size — the final gap that the sampler alone makes of errors that size.
        public let perturbedCPUFinalGap: Double
        public var worstUNetStep: Double { steps.map(\.unetRelativeL2).max() ?? .infinity }
        /// The GPU image is explained by the sampler: its final gap is within 4× what the CPU control reaches with
        /// errors of the same size (or within the on-device loop bar), and no step's UNet error is out of scale.
        public var passed: Bool {
            !steps.isEmpty && steps.allSatisfy { $0.unetRelativeL2.isFinite && $0.unetRelativeL2 <= 4 * limit }
                && finalGap <= max(4 * perturbedCPUFinalGap, CUDAPipelineCheck.deviceLoopLimit)
        }
    }

    /// Records (timestep, input, output) of every step of a `denoise` call.
    private final class Recorder {
        var steps: [(timestep: Float, input: Tensor, output: Tensor)] = []
    }

    public static func run(directory: String, request: GenerationRequest, precision: CUDADataType = .float16) throws -> Result {
        let cpu = try StableDiffusionPipeline(directory: directory, device: .cpu, quantizedExecution: .simulated)
        var warnings: [String] = []
        let conditioning = try cpu.encodeConditioning(request, warnings: &warnings)
        let cpuSteps = Recorder()
        let cpuFinal = try cpu.denoise(request, conditioning: conditioning, observe: { _, t, input, output in cpuSteps.steps.append((t, input, output)) })
        guard let first = cpuSteps.steps.first else { throw CUDAError.invalidArgument("no denoising steps") }

        let gpu = try StableDiffusionPipeline(directory: directory, device: .cuda, precision: precision)
        // The same conditioning (CPU text encoders) on both sides isolates the UNet and the scheduler.
        let unet = try gpu.noisePredictor.makeDenoiser(conditioning: conditioning, sampleShape: first.input.shape)
        var unetErrors: [Double] = []
        for step in cpuSteps.steps { unetErrors.append(try unet(step.input, step.timestep).relativeL2(to: step.output)) }
        let gpuSteps = Recorder()
        let gpuFinal = try gpu.denoise(request, conditioning: conditioning, observe: { _, t, input, output in gpuSteps.steps.append((t, input, output)) })
        let perturbed = try perturbedDenoise(cpu, request: request, conditioning: conditioning, start: first.input,
                                             relativeNoise: unetErrors)

        var steps: [Step] = []
        for (index, step) in cpuSteps.steps.enumerated() where index < gpuSteps.steps.count {
            steps.append(Step(index: index, timestep: step.timestep, unetRelativeL2: unetErrors[index],
                              trajectoryRelativeL2: gpuSteps.steps[index].input.relativeL2(to: step.input)))
        }
        let quantized = QuantizedModelFolder.isQuantized(unetDirectory: directory + "/unet")
        return Result(directory: directory, steps: steps,
                      limit: quantized ? CUDAUNetCheck.quantizedParityLimit : CUDAUNetCheck.parityLimit(for: precision),
                      finalGap: gpuFinal.relativeL2(to: cpuFinal), perturbedCPUFinalGap: perturbed.relativeL2(to: cpuFinal))
    }

    /// The pipeline's host loop on the CPU, from the same initial latents, with each step's UNet output x replaced by
    /// x + δ·‖x‖/√n · z (z standard normal from a fixed seed, δ the step's `relativeNoise`).
    static func perturbedDenoise(_ pipeline: StableDiffusionPipeline, request: GenerationRequest, conditioning: UNetConditioning,
                                 start: Tensor, relativeNoise: [Double]) throws -> Tensor {
        var scheduler = try request.scheduler.makeScheduler(config: pipeline.schedulerConfiguration, steps: request.steps)
        var generator = TorchGenerator(seed: request.seed)
        var latents = generator.randn([1] + Array(start.shape.dropFirst()))
        latents = CPUKernels.scale(latents, scheduler.initNoiseSigma)
        var perturbation = TorchGenerator(seed: request.seed + 1)
        let unet = try pipeline.noisePredictor.makeDenoiser(conditioning: conditioning, sampleShape: start.shape)
        for (index, timestep) in scheduler.timesteps.enumerated() where index < relativeNoise.count {
            let input = scheduler.scaleModelInput(conditioning.guided ? Tensor.concatenate([latents, latents]) : latents, stepIndex: index)
            var output = try unet(input, Float(timestep))
            let norm = output.scalars.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            let size = Float(relativeNoise[index] * norm / Double(max(1, output.count)).squareRoot())
            let z = perturbation.randn(output.shape)
            output = Tensor(shape: output.shape, scalars: zip(output.scalars, z.scalars).map { $0 + size * $1 })
            var noise = output
            if conditioning.guided {
                let half = output.count / 2, s = request.guidanceScale
                noise = Tensor(shape: latents.shape, scalars: (0..<half).map { output.scalars[$0] + s * (output.scalars[half + $0] - output.scalars[$0]) })
            }
            latents = scheduler.step(modelOutput: noise, stepIndex: index, sample: latents, generator: &generator)
        }
        return latents
    }
}

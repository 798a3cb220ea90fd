/// A whole Euler denoising loop on the GPU (diffusers' `EulerDiscreteScheduler` step with `s_churn` 0, after
/// classifier-free guidance), queued without the host in the loop: per step one D2D copy of the step's
/// timestep features, one replay of the UNet's CUDA graph and one fused kernel that does guidance
/// (uncond + s·(cond − uncond)), the Euler update of the FP32 latents and the next step's
/// `scale_model_input` (+ the CFG batch duplication) into the graph's 16-bit input buffer. The host only waits
/// on one event per step to report progress. Same arithmetic as the host loop (`EulerDiscreteScheduler.step`,
/// `StableDiffusionPipeline.guide`) in FP32, operation for operation, so given the same UNet outputs the latents are
/// bit-identical to the host loop's.
struct CUDAEulerLoop {
    static let source = CUDAKernelSources.prelude + #"""
/// x: FP32 latents [n]; y: UNet output [batch, n] (16-bit); next: UNet input [batch, n] (16-bit).
/// mode 0: only write next = x / next_divisor; otherwise update x first. prediction: 0 epsilon, 1 v, 2 sample.
/// Every operation is an explicitly rounded intrinsic (no FMA contraction), in the host code's order, so the
/// result is bit-identical to `StableDiffusionPipeline.guide` + `EulerDiscreteScheduler.step` for the same UNet output.
extern "C" __global__ void euler_cfg_step(float* __restrict__ x, const half_t* __restrict__ y, half_t* __restrict__ next,
        i64 n, int batch, int mode, float guidance, float sigma, float dt, int prediction, float v_output_scale,
        float v_sample_divisor, float next_divisor) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        float s = x[i];
        if (mode != 0) {
            float e = h2f(y[(batch - 1) * n + i]);
            if (batch == 2) { const float u = h2f(y[i]); e = __fadd_rn(u, __fmul_rn(guidance, __fsub_rn(e, u))); }
            float x0;
            if (prediction == 0) x0 = __fsub_rn(s, __fmul_rn(sigma, e));
            else if (prediction == 1) x0 = __fadd_rn(__fmul_rn(e, v_output_scale), __fdiv_rn(s, v_sample_divisor));
            else x0 = e;
            s = __fadd_rn(s, __fmul_rn(__fdiv_rn(__fsub_rn(s, x0), sigma), dt));
            x[i] = s;
        }
        if (next_divisor != 0.f) {
            const half_t h = f2h(__fdiv_rn(s, next_divisor));
            for (int b = 0; b < batch; ++b) next[b * n + i] = h;
        }
    }
}
"""#

    /// Runs `plan` on `graph` (captured for this batch and latent shape). Returns the final latents.
    static func run(_ plan: EulerLoopPlan, graph: CUDAUNetGraph, kernels: CUDAKernels, guided: Bool,
                    progress: ((Int) -> Void)?) throws -> Tensor {
        let unet = graph.unet, context = kernels.context
        let steps = plan.timesteps.count, batch = guided ? 2 : 1, n = plan.latents.count
        guard plan.sigmas.count == steps + 1, graph.sample.shape[0] == batch, graph.sample.count == batch * n else {
            throw CUDAError.invalidArgument("CUDAEulerLoop: graph input \(graph.sample.shape) for latents \(plan.latents.shape), batch \(batch)")
        }
        // Every step's timestep features, uploaded once: [steps · batch, channels].
        let features = try kernels.upload(Tensor.concatenate(plan.timesteps.map { unet.model.timeProjection(Array(repeating: $0, count: batch)) }))
        let featureBytes = graph.conditioning.timeFeatures.byteCount
        let x = try context.upload(plan.latents, dtype: .float32)
        let function = try kernels.compiler.function("euler_cfg_step", module: "diffuse8_euler", source: source)
        let prediction: Int32 = plan.predictionType == .epsilon ? 0 : (plan.predictionType == .vPrediction ? 1 : 2)
        // The same Float expressions as `EulerDiscreteScheduler` (scaledInput, predictOriginal, step).
        func inputDivisor(_ sigma: Float) -> Float { (sigma * sigma + 1).squareRoot() }
        func step(mode: Int32, sigma: Float, dt: Float, nextDivisor: Float) throws {
            try kernels.compiler.launch(function, grid: kernels.elementwiseGrid(n), block: (256, 1, 1), [
                .tensor(x), .tensor(graph.output), .tensor(graph.sample), .int64(Int64(n)), .int(batch), .int32(mode),
                .float(plan.guidanceScale), .float(sigma), .float(dt), .int32(prediction),
                .float(-sigma / (sigma * sigma + 1).squareRoot()), .float(sigma * sigma + 1), .float(nextDivisor)])
        }
        try step(mode: 0, sigma: 1, dt: 0, nextDivisor: inputDivisor(plan.sigmas[0]))
        var done: [CUDAEvent] = []
        for i in 0..<steps {
            try graph.launch(timeFeatures: features.address + UInt64(i * featureBytes))
            let sigma = plan.sigmas[i]
            try step(mode: 1, sigma: sigma, dt: plan.sigmas[i + 1] - sigma, nextDivisor: i + 1 < steps ? inputDivisor(plan.sigmas[i + 1]) : 0)
            let event = try CUDAEvent(context)
            try event.record(on: context.stream)
            done.append(event)
        }
        for (i, event) in done.enumerated() {
            try event.synchronize()
            progress?(i + 1)
        }
        return try withExtendedLifetime(features) { try context.download(x).reshaped(plan.latents.shape) }
    }
}

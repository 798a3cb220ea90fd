/// A whole denoising loop on the GPU for any scheduler that can state its steps as coefficients (`SamplerStep`:
/// Euler, Euler a, DDIM (with or without `clip_sample`), DPM++ 2M (Karras)), queued without the host in the loop: per step
/// one D2D copy of the step's timestep features, one replay of the UNet's CUDA graph and one fused kernel that does
/// classifier-free guidance (uncond + s·(cond − uncond)), the x0 prediction, the update of the FP32 latents (with
/// the previous x0 and the step's pre-drawn noise where the scheduler uses them) and the next step's input scaling
/// (+ the CFG batch duplication) into the graph's 16-bit input buffer. The host only waits on one event per step
/// to report progress. FP32 arithmetic; the host scheduler (`Scheduler.step`) is the reference, and the
/// coefficients reproduce it up to FP32 rounding (`SchedulerTests`).
struct CUDASamplingLoop {
    static let source = CUDAKernelSources.prelude + #"""
/// x: FP32 latents [n]; x0p: FP32 previous x0 [n]; noise: FP32 [n] or null; y: UNet output [batch, n] (16-bit);
/// next: UNet input [batch, n] (16-bit). mode 0: only write next = x / next_divisor; otherwise update x first.
extern "C" __global__ void sampler_step(float* __restrict__ x, float* __restrict__ x0p, const float* __restrict__ noise,
        const half_t* __restrict__ y, half_t* __restrict__ next, i64 n, int batch, int mode, float guidance,
        float from_sample, float from_output, float sample_scale, float original_scale, float previous_scale,
        float noise_scale, float clipped_scale, float clip_range, float next_divisor) {
    D8_AFTER_PREVIOUS_KERNEL();
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        float s = x[i];
        if (mode != 0) {
            float e = h2f(y[(batch - 1) * n + i]);
            if (batch == 2) { const float u = h2f(y[i]); e = u + guidance * (e - u); }
            const float x0 = from_sample * s + from_output * e;
            float r = sample_scale * s + original_scale * x0;
            if (clipped_scale != 0.f) r += clipped_scale * fminf(fmaxf(x0, -clip_range), clip_range);
            if (previous_scale != 0.f) r += previous_scale * x0p[i];
            if (noise) r += noise_scale * noise[i];
            x0p[i] = x0;
            s = r;
            x[i] = s;
        }
        if (next_divisor != 0.f) {
            const half_t h = f2h(s / next_divisor);
            for (int b = 0; b < batch; ++b) next[b * n + i] = h;
        }
    }
}
"""#

    /// Runs `plan` on `graph` (captured for this batch and latent shape). Returns the final latents.
    static func run(_ plan: SamplingPlan, graph: CUDAUNetGraph, kernels: CUDAKernels, guided: Bool,
                    progress: ((Int) -> Void)?) throws -> Tensor {
        let unet = graph.unet, context = kernels.context
        let steps = plan.steps.count, batch = guided ? 2 : 1, n = plan.latents.count
        guard plan.timesteps.count == steps, plan.noise.count == steps, graph.sample.shape[0] == batch, graph.sample.count == batch * n,
              plan.noise.allSatisfy({ $0.map { $0.count == n } ?? true }) else {
            throw CUDAError.invalidArgument("CUDASamplingLoop: graph input \(graph.sample.shape) for latents \(plan.latents.shape), batch \(batch), \(steps) steps")
        }
        // Every step's timestep features, uploaded once: [steps · batch, channels].
        let features = try kernels.upload(Tensor.concatenate(plan.timesteps.map { unet.model.timeProjection(Array(repeating: $0, count: batch)) }))
        let featureBytes = graph.conditioning.timeFeatures.byteCount
        let x = try context.upload(plan.latents, dtype: .float32)
        let previousOriginal = try context.empty([n], dtype: .float32)
        try context.zero(previousOriginal)
        let noise: [CUDATensor?] = try plan.noise.map { try $0.map { try context.upload($0, dtype: .float32) } }
        let function = try kernels.compiler.function("sampler_step", module: "diffuse8_sampler", source: source)
        func launch(mode: Int32, step: SamplerStep?, noise: CUDATensor?, nextDivisor: Float) throws {
            let s = step ?? SamplerStep(inputDivisor: 1, originalFromSample: 0, originalFromOutput: 0, sampleScale: 1, originalScale: 0)
            try kernels.compiler.launch(function, grid: kernels.elementwiseGrid(n), block: (256, 1, 1), [
                .tensor(x), .tensor(previousOriginal), .pointer(noise?.address ?? 0), .tensor(graph.output), .tensor(graph.sample),
                .int64(Int64(n)), .int(batch), .int32(mode), .float(plan.guidanceScale), .float(s.originalFromSample),
                .float(s.originalFromOutput), .float(s.sampleScale), .float(s.originalScale), .float(s.previousOriginalScale),
                .float(s.noiseScale), .float(s.clippedOriginalScale), .float(s.clipRange), .float(nextDivisor)])
        }
        try launch(mode: 0, step: nil, noise: nil, nextDivisor: plan.steps[0].inputDivisor)
        var done: [CUDAEvent] = []
        for (i, step) in plan.steps.enumerated() {
            try graph.launch(timeFeatures: features.address + UInt64(i * featureBytes))
            try launch(mode: 1, step: step, noise: step.noiseScale != 0 ? noise[i] : nil,
                       nextDivisor: i + 1 < steps ? plan.steps[i + 1].inputDivisor : 0)
            let event = try CUDAEvent(context)
            try event.record(on: context.stream)
            done.append(event)
        }
        for (i, event) in done.enumerated() {
            try event.synchronize()
            progress?(i + 1)
        }
        return try withExtendedLifetime((features, noise)) { try context.download(x).reshaped(plan.latents.shape) }
    }
}

import Diffuse8
extension CUDASelfTest {
    /// The FP16 VAE decoder's GPU checks: `CUDAKernels.gemmAttention` against `CPUKernels.attention` (FP16-rounded
    /// random inputs, limit 2e-3; every path: in place, staged copies of unaligned heads, fused-QKV strides, query
    /// chunking, head dims that are not multiples of 8), then for each diffusers `vae/` folder in `directories` the
    /// whole `CUDAVAEDecoder.decode` against the CPU FP32 `AutoencoderKL.decode` on seeded `TorchGenerator` latents
    /// (rounded to FP16 for both), limit 5e-3 relative L2. Outputs are poisoned with NaN; NaN/inf left in the output
    /// count as non-finite and fail the check.
    public static func vaeChecks(kernels: CUDAKernels, directories: [String],
                                 progress: ((CUDASelfTestResult) -> Void)? = nil) -> [CUDASelfTestResult] {
        var random = SelfTestRandom(seed: 0x0A_E5EED)
        var results: [CUDASelfTestResult] = []
        let context = kernels.context
        let previousPoison = context.poisonsAllocations
        context.poisonsAllocations = true
        defer { context.poisonsAllocations = previousPoison }

        func record(_ name: String, _ shape: String, _ threshold: Double, _ body: () throws -> (gpu: CUDATensor, cpu: Tensor)) {
            let result = compare(name, shape, threshold: threshold, context: context, body)
            results.append(result)
            progress?(result)
        }
        func pair(_ shape: [Int]) throws -> (CUDATensor, Tensor) {
            let host = random.normalHalfRounded(shape)
            return (try kernels.upload(host), host)
        }

        // GEMM attention on separate q/k/v tensors.
        let cases: [(batch: Int, lq: Int, lk: Int, channels: Int, heads: Int)] = [
            (1, 256, 256, 512, 1),   // the SD VAE mid block at 16×16 latents
            (2, 300, 300, 128, 1),   // ragged length, batch offsets 256-byte aligned
            (1, 1024, 1024, 128, 2), // head 1 starts 128 bytes in: staged copies
            (2, 77, 50, 60, 3),      // head dim 20 (no fused kernel, rows not 16-byte multiples)
            (2, 100, 333, 16, 1),    // the tiny test VAE's head dim, Lq ≠ Lk
        ]
        for c in cases {
            record("gemmAttention d=\(c.channels / c.heads)", "B\(c.batch) H\(c.heads) Lq\(c.lq) Lk\(c.lk)", 2e-3) {
                let (q, qh) = try pair([c.batch, c.lq, c.channels])
                let (k, kh) = try pair([c.batch, c.lk, c.channels]), (v, vh) = try pair([c.batch, c.lk, c.channels])
                return (try kernels.gemmAttention(query: q, key: k, value: v, heads: c.heads),
                        CPUKernels.attention(query: qh, key: kh, value: vh, heads: c.heads))
            }
        }
        // Fused QKV read in place ([B, L, 3C] rows) with a small S budget: 128-row query chunks plus a ragged one.
        for (batch, tokens, channels, label) in [(2, 300, 512, "chunked, in place"), (2, 300, 40, "chunked, staged")] {
            record("gemmAttention fused QKV \(label)", "B\(batch) L\(tokens) C\(channels) (stride 3C)", 2e-3) {
                let (qkv, host) = try pair([batch, tokens, 3 * channels])
                func part(_ i: Int) -> Tensor {
                    Tensor(shape: [batch, tokens, channels]) { out in
                        for row in 0..<(batch * tokens) { for j in 0..<channels {
                            out[row * channels + j] = host.scalars[row * 3 * channels + i * channels + j]
                        } }
                    }
                }
                let y = try withExtendedLifetime(qkv) {
                    try kernels.gemmAttention(query: qkv.address, queryStride: 3 * channels, key: qkv.address + UInt64(2 * channels),
                                              value: qkv.address + UInt64(4 * channels), keyValueStride: 3 * channels, batch: batch,
                                              queries: tokens, keys: tokens, channels: channels, heads: 1,
                                              maximumScoreBytes: 128 * tokens * 2)
                }
                return (y, CPUKernels.attention(query: part(0), key: part(1), value: part(2), heads: 1))
            }
        }
        record("scaledDotProductAttention d=64", "B2 H2 Lq70 Lk77 (fused kernel)", 2e-3) {
            let (q, qh) = try pair([2, 70, 128]), (k, kh) = try pair([2, 77, 128]), (v, vh) = try pair([2, 77, 128])
            return (try kernels.scaledDotProductAttention(query: q, key: k, value: v, heads: 2),
                    CPUKernels.attention(query: qh, key: kh, value: vh, heads: 2))
        }

        // Whole decoder, FP16 GPU vs FP32 CPU.
        for directory in directories {
            let loaded: (AutoencoderKL, CUDAVAEDecoder)
            do {
                let vae = try AutoencoderKL.load(directory: directory)
                loaded = (vae, try CUDAVAEDecoder(vae, kernels: kernels, keepHostWeights: true))
            } catch {
                results.append(CUDASelfTestResult(name: "vae decode", shape: directory, relativeL2: .infinity, threshold: vaeParityLimit,
                                                  nonFinite: 0, error: "loading: \(error)"))
                progress?(results[results.count - 1])
                continue
            }
            let (vae, decoder) = loaded
            var generator = TorchGenerator(seed: 0xDEC0DE)
            for (batch, size) in [(1, 16), (2, 8)] {
                let shape = [batch, vae.configuration.latentChannels, size, size]
                record("vae decode \(lastComponents(directory))", "\(shape)", vaeParityLimit) {
                    let latents = generator.randn(shape)
                    let rounded = Tensor(shape: shape, scalars: latents.scalars.map { Float(Float16($0)) })
                    return (try decoder.decode(kernels.upload(rounded)), vae.decode(rounded))
                }
            }
        }
        return results
    }

    /// FP16 GPU decoder vs. FP32 CPU decoder: the same bar as the UNet parity check.
    public static let vaeParityLimit = 5e-3

    /// "…/tiny-sd15/vae" → "tiny-sd15/vae" (short labels for the table).
    static func lastComponents(_ path: String, _ count: Int = 2) -> String {
        path.split(separator: "/").suffix(count).joined(separator: "/")
    }

    /// Times `CUDAVAEDecoder.decode` of `directory` on random latents [batch, latent_channels, height, width]: one warm-up
    /// (kernel compilation, convolution autotuning, GEMM plans), `releaseUnusedWeightLayouts`, then `repeats` decodes
    /// each between two CUDA events. Returns the median and minimum milliseconds and the allocator's peak bytes
    /// (weights + one decode's working set) after the warm-up.
    public static func vaeBenchmark(directory: String, kernels: CUDAKernels, batch: Int = 1, height: Int = 128,
                                    width: Int = 128, repeats: Int = 5) throws -> (medianMilliseconds: Double,
                                                                                   minimumMilliseconds: Double, peakBytes: Int) {
        let context = kernels.context
        let decoder = try CUDAVAEDecoder.load(directory: directory, kernels: kernels)
        var generator = TorchGenerator(seed: 0xBE4C)
        let latents = try kernels.upload(generator.randn([batch, decoder.configuration.latentChannels, height, width]))
        _ = try decoder.decode(latents)
        decoder.releaseUnusedWeightLayouts()
        try context.synchronize()
        try context.releaseCachedMemory()
        context.resetPeakMemory()
        let begin = try CUDAEvent(context), end = try CUDAEvent(context)
        var times: [Double] = []
        for _ in 0..<max(repeats, 1) {
            try begin.record(on: context.stream)
            _ = try decoder.decode(latents)
            try end.record(on: context.stream)
            times.append(try end.milliseconds(since: begin))
        }
        times.sort()
        return (times[times.count / 2], times[0], context.peakAllocatorBytes)
    }
}

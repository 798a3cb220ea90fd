/// Event timing of queued GPU work: what the engine's autotuning (GEMM algorithms, attention and convolution paths)
/// measures, and what the benchmarks report.
public enum CUDABenchmark {
    /// Median milliseconds of `body` over `repeats` event-timed runs after `warmup` runs. With `hold`, each run is
    /// queued behind the work `hold` queues (`CUDAKernels.holdStream`), so that it is timed as the device runs it in a
    /// CUDA graph, without the gaps of the host's launches.
    public static func time(_ context: CUDAContext, warmup: Int = 3, repeats: Int = 20, hold: (() throws -> Void)? = nil,
                            _ body: () throws -> Void) throws -> Double {
        for _ in 0..<warmup { try body() }
        try context.synchronize()
        let start = try CUDAEvent(context), stop = try CUDAEvent(context)
        var samples: [Double] = []
        for _ in 0..<repeats {
            try hold?()
            try start.record(on: context.stream)
            try body()
            try stop.record(on: context.stream)
            samples.append(try stop.milliseconds(since: start))
        }
        samples.sort()
        return samples[samples.count / 2]
    }
}

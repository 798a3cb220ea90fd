#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Diffuse8

extension CUDASelfTest {
    /// Exit codes of `runReport`.
    public enum ExitCode: Int32 {
        case passed = 0, failed = 1, noCUDA = 2
    }

    /// What `diffuse8 cuda-selftest` (and `diffuse8-cuda-selftest`) does: prints the device and libraries,
    /// runs the GPU checks (unless `tests` is false) and optionally the benchmark, and returns the exit code.
    public static func runReport(tests: Bool = true, large: Bool = false, only: String? = nil, benchmark: Bool = false,
                                 benchmarkParts: Set<CUDABenchmark.Part> = Set(CUDABenchmark.Part.allCases),
                                 print output: (String) -> Void = { Swift.print($0); fflush(stdout) }) -> ExitCode {
        let kernels: CUDAKernels
        do {
            kernels = try CUDAKernels()
        } catch {
            output("no CUDA GPU: \(error)")
            return .noCUDA
        }
        let context = kernels.context
        let memory = (try? context.memoryInfo()) ?? (free: 0, total: context.totalMemory)
        output("device    \(context.deviceName), sm_\(context.computeCapability.major)\(context.computeCapability.minor), "
               + "\(context.multiprocessorCount) SMs, \(memory.total >> 20) MiB (\(memory.free >> 20) MiB free)")
        context.describeLibraries().forEach(output)
        output("kernel cache \(CUDAKernelCompiler.cacheDirectory() ?? "(none: compiling in every process)")")
        var code = ExitCode.passed
        if tests {
            let start = CUDAKernelCompiler.now()
            let results = run(kernels: kernels, large: large, only: only)
            if let only, results.isEmpty {
                output("no GPU check has \"\(only)\" in its name")
                return .failed
            }
            output(table(results))
            output("checks took \(CUDABenchmark.fixed(CUDAKernelCompiler.now() - start, 1)) s, of which NVRTC "
                   + "\(CUDABenchmark.fixed(kernels.compiler.compileSeconds, 1)) s (\(kernels.compiler.cacheHits) modules from the disk cache)")
            if results.contains(where: { !$0.passed }) { code = .failed }
        }
        if benchmark {
            do {
                output(CUDABenchmark.table(try CUDABenchmark.run(kernels: kernels, parts: benchmarkParts)))
            } catch {
                output("benchmark failed: \(error)")
                code = .failed
            }
        }
        return code
    }
}

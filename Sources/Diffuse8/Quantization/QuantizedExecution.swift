#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How the CPU runs the layers of a quantized folder.
public enum QuantizedExecution: String, Sendable, CaseIterable {
    /// Fake quantization around FP32 kernels (dequantized FP32 weights in memory): the reference, and what
    /// calibration-side tools and the GPU loader (which reads the dequantized weights) use.
    case simulated = "simulate"
    /// Real 8-bit kernels where the CPU has them (INT8 folders: `CPUInt8LayerHook`, weights packed once and
    /// their FP32 copies never made); FP8 folders stay simulated (no FP8 arithmetic on these CPUs).
    case native

    /// The CPU pipeline's choice: `DIFFUSE8_QUANTIZED_EXECUTION=simulate|native`; when unset, `native` where the CPU
    /// has a SIMD INT8 kernel (or `DIFFUSE8_INT8_KERNEL` picks one), else `simulated` (the portable integer loops are
    /// several times slower than the FP32 kernels the simulation uses). An unknown value stops the process with a
    /// message naming the allowed ones.
    public static let cpuDefault: QuantizedExecution = {
        guard let value = getenv("DIFFUSE8_QUANTIZED_EXECUTION").map({ String(cString: $0) }), !value.isEmpty else {
            return CPUInt8Kernel.best != .portable || CPUInt8Kernel.environmentChoice != nil ? .native : .simulated
        }
        guard let choice = QuantizedExecution(rawValue: value) else {
            // Read once, lazily, where no error can be thrown: stop with the message (exit status 2), not a trap.
            fputs("error: DIFFUSE8_QUANTIZED_EXECUTION=\(value) is not allowed; use simulate or native\n", stderr)
            exit(2)
        }
        return choice
    }()
}

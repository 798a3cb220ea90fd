/// How the CPU runs the layers of a quantized folder.
public enum QuantizedExecution: String, Sendable, CaseIterable {
    /// Fake quantization around FP32 kernels (dequantized FP32 weights in memory): the reference, and what
    /// calibration-side tools and the GPU loader (which reads the dequantized weights) use.
    case simulated = "simulate"
    /// Native execution, the FP32 copies of the weights never made (`CPUNativeQuantization`): INT8 folders on real
    /// INT8 kernels (`CPUInt8LayerHook`, weights packed once); FP8 folders keep their 1-byte codes and expand them
    /// to FP32 per GEMM tile or panel for the FP32 kernels (`CPUFP8LayerHook`: no FP8 arithmetic on these CPUs, so the speed is the
    /// simulation's and the weight memory a quarter of FP32's).
    case native

    /// The CPU pipeline's choice: `DIFFUSE8_QUANTIZED_EXECUTION=simulate|native`; when unset, `native` where the CPU
    /// has a SIMD INT8 kernel (or `DIFFUSE8_INT8_KERNEL` picks one), else `simulated` (the portable integer loops are
    /// several times slower than the FP32 kernels the simulation uses). An unknown value stops the process with a
    /// message naming the allowed ones.
    public static let cpuDefault: QuantizedExecution = {
        EnvironmentSetting.choice("DIFFUSE8_QUANTIZED_EXECUTION", of: QuantizedExecution.self)
            ?? (CPUInt8Kernel.best != .portable || CPUInt8Kernel.environmentChoice != nil ? .native : .simulated)
    }()
}

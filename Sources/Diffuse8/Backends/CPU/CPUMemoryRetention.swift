import CDiffuse8Kernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Keeps freed activation memory in the process for the next model call (glibc only; set once, when the first
/// `CPUBackend` is made).
///
/// Every step of a denoising loop allocates and frees the same activation tensors. glibc's default thresholds slide
/// with what was freed last: depending on where a step's long-lived tensors land in the heap, the free top of the heap
/// can pass the trim threshold when a step ends and be given back to the kernel, so the next step faults every page in
/// again (measured on the default model's INT8 UNet: two 2.3–2.6 MB trims and ~1 300 page faults per step, 15 % of the
/// step's time, while the same forward timed in a loop had none). Fixed thresholds avoid that: allocations below
/// 32 MiB (glibc's largest allowed value) come from the heap and a heap keeps up to 64 MiB free. Memory already
/// touched stays resident until it is reused or the process ends (the default model's peak RSS was unchanged).
///
/// `DIFFUSE8_KEEP_FREED_MEMORY=off` keeps glibc's defaults (for measuring the difference), and so does a
/// `GLIBC_TUNABLES` that sets any `glibc.malloc` value (the user's choice wins).
enum CPUMemoryRetention {
    /// Allocations from this size on get their own mapping (returned to the kernel when freed).
    static let mmapThreshold = 32 << 20
    /// Free bytes a heap may keep at its top.
    static let trimThreshold = 64 << 20

    /// Whether the thresholds were set (applied on first use).
    static let isApplied: Bool = {
        guard EnvironmentSetting.choice("DIFFUSE8_KEEP_FREED_MEMORY", of: Switch.self) != .off else { return false }
        if let tunables = getenv("GLIBC_TUNABLES"), String(cString: tunables).contains("glibc.malloc.") { return false }
        return d8_retain_freed_memory(mmapThreshold, trimThreshold) == 1
    }()
}

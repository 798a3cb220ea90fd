import CDiffuse8Kernels

/// The INT8 GEMM micro-kernel variants (`Sources/CDiffuse8Kernels`), chosen at run time from the CPU's features,
/// so one binary runs everywhere and uses the best instructions where it runs.
///
/// `DIFFUSE8_INT8_KERNEL=portable|avx2|avx512-vnni|neon-dot` (read once) or `CPUInt8Kernel.forced` picks another
/// supported variant (tests, benchmarks). Every variant computes the same exact INT32 sums.
public enum CPUInt8Kernel: String, CaseIterable, Sendable {
    /// Plain integer loops: any CPU.
    case portable
    /// `vpmaddwd` on INT16-widened codes (x86-64 with AVX2).
    case avx2
    /// `vpdpbusd` on 512-bit registers (x86-64 with AVX-512 F/BW/VNNI).
    case avx512vnni = "avx512-vnni"
    /// `sdot` (arm64 with the ARMv8.2 dot-product extension).
    case neonDot = "neon-dot"

    var code: Int32 {
        switch self {
        case .portable: return Int32(D8_INT8_PORTABLE)
        case .avx2: return Int32(D8_INT8_AVX2)
        case .avx512vnni: return Int32(D8_INT8_AVX512VNNI)
        case .neonDot: return Int32(D8_INT8_NEON_DOT)
        }
    }

    /// Whether this CPU (and this build's architecture) can run the variant.
    public var isSupported: Bool { d8_int8_supported(code) != 0 }

    /// The fastest variant this CPU supports.
    public static let best: CPUInt8Kernel = allCases.first { $0.code == d8_int8_best() } ?? .portable

    /// A variant forced by the program (tests, benchmarks); nil = the environment's choice or `best`.
    /// Must be supported (`isSupported`).
    nonisolated(unsafe) public static var forced: CPUInt8Kernel? {
        willSet { precondition(newValue?.isSupported ?? true, "INT8 kernel \(newValue!.rawValue) is not supported by this CPU") }
    }

    /// `DIFFUSE8_INT8_KERNEL`, checked once: an unknown or unsupported value stops the process with a message.
    static let environmentChoice: CPUInt8Kernel? = {
        guard let kernel = EnvironmentSetting.choice("DIFFUSE8_INT8_KERNEL", of: CPUInt8Kernel.self) else { return nil }
        guard kernel.isSupported else {
            EnvironmentSetting.stop("DIFFUSE8_INT8_KERNEL=\(kernel.rawValue): this CPU lacks the instructions; supported here: "
                                    + allCases.filter(\.isSupported).map(\.rawValue).joined(separator: ", "))
        }
        return kernel
    }()

    /// The variant the INT8 layers run with now.
    public static var active: CPUInt8Kernel { forced ?? environmentChoice ?? best }

    /// Rows and columns of one micro-tile.
    static let tileRows = Int(D8_INT8_MR)
    static let tileColumns = Int(D8_INT8_NR)

    /// One MR × NR tile of INT32 sums (see `Int8Kernels.h`).
    @inline(__always)
    func tile(a: UnsafePointer<UInt8>, lda: Int, panel: UnsafePointer<Int8>, compensation: UnsafePointer<Int32>,
              kGroups: Int, into c: UnsafeMutablePointer<Int32>) {
        d8_int8_tile(code, a, lda, panel, compensation, kGroups, c)
    }
}

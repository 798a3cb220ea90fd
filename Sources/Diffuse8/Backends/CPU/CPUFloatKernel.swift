import CDiffuse8Kernels

/// The FP32 SGEMM micro-kernel variants, chosen at run time from the CPU's features: one binary runs on any CPU
/// and uses the widest FMA registers where it runs. The x86-64 kernels are C with per-function target attributes
/// (`Sources/CDiffuse8Kernels/FloatKernels.c`); the portable one is Swift (`GemmMicroKernel`, compiled for the
/// build's target).
///
/// `DIFFUSE8_FLOAT_KERNEL=portable|avx2|avx512` (read once) or `CPUFloatKernel.forced` picks another supported
/// variant (tests, benchmarks). The variants differ only in float32 rounding (the order of the K sums is the same).
/// Every packed operand (`Gemm.packB`, the layers' packed weights) is laid out for one variant's tile.
public enum CPUFloatKernel: String, CaseIterable, Sendable {
    /// Swift `SIMD` code (6 × 16 tile with `DIFFUSE8_FMA`, 6 × 8 otherwise): any CPU.
    case portable
    /// 6 × 16 tile on YMM FMAs (x86-64 with AVX2 and FMA).
    case avx2
    /// 12 × 32 tile on ZMM FMAs (x86-64 with AVX-512F).
    case avx512

    var code: Int32 {
        switch self {
        case .portable: return Int32(D8_F32_PORTABLE)
        case .avx2: return Int32(D8_F32_AVX2)
        case .avx512: return Int32(D8_F32_AVX512)
        }
    }

    /// Whether this CPU (and this build's architecture) can run the variant.
    public var isSupported: Bool { d8_f32_supported(code) != 0 }

    /// The fastest variant this CPU supports.
    public static let best: CPUFloatKernel = allCases.first { $0.code == d8_f32_best() } ?? .portable

    /// A variant forced by the program (tests, benchmarks); nil = the environment's choice or `best`.
    /// Must be supported (`isSupported`). Weights packed for another variant are re-packed on their next use.
    nonisolated(unsafe) public static var forced: CPUFloatKernel? {
        willSet { precondition(newValue?.isSupported ?? true, "FP32 kernel \(newValue!.rawValue) is not supported by this CPU") }
    }

    /// `DIFFUSE8_FLOAT_KERNEL`, checked once: an unknown or unsupported value stops the process with a message.
    static let environmentChoice: CPUFloatKernel? = {
        guard let kernel = EnvironmentSetting.choice("DIFFUSE8_FLOAT_KERNEL", of: CPUFloatKernel.self) else { return nil }
        guard kernel.isSupported else {
            EnvironmentSetting.stop("DIFFUSE8_FLOAT_KERNEL=\(kernel.rawValue): this CPU lacks the instructions; supported here: "
                                    + allCases.filter(\.isSupported).map(\.rawValue).joined(separator: ", "))
        }
        return kernel
    }()

    /// The variant the SGEMM runs with now.
    public static var active: CPUFloatKernel { forced ?? environmentChoice ?? best }

    /// Rows (MR) of one micro-tile: the height of a packed A sliver.
    var tileRows: Int { Self.tiles[index].rows }

    /// Columns (NR) of one micro-tile: the width of a packed B sliver.
    var tileColumns: Int { Self.tiles[index].columns }

    /// Depth of one packed K slice: an NR-wide B sliver (depth·NR floats) stays in half the 32 KB L1, leaving room for
    /// the A slivers streaming past it.
    var depthBlock: Int { self == .avx512 ? 128 : 256 }

    private var index: Int {
        switch self {
        case .portable: return 0
        case .avx2: return 1
        case .avx512: return 2
        }
    }

    private static let tiles: [(rows: Int, columns: Int)] = allCases.map {
        $0 == .portable ? (GemmMicroKernel.mr, GemmMicroKernel.nr) : (Int(d8_f32_tile_rows($0.code)), Int(d8_f32_tile_columns($0.code)))
    }

    /// C[rows × columns] (+)= packedA · packedB for one K slice of depth `depth` (see `Gemm.macroKernel`).
    @inline(__always)
    func block(rows: Int, columns: Int, depth: Int, packedA: UnsafePointer<Float>, packedB: UnsafePointer<Float>,
               c: UnsafeMutablePointer<Float>, ldc: Int, initial: GemmMicroKernel.Initial) {
        let mode: Int32, bias: UnsafePointer<Float>?
        switch initial {
        case .zero: (mode, bias) = (Int32(D8_F32_ZERO), nil)
        case .accumulate: (mode, bias) = (Int32(D8_F32_ACCUMULATE), nil)
        case .columnBias(let p): (mode, bias) = (Int32(D8_F32_COLUMN_BIAS), p)
        case .rowBias(let p): (mode, bias) = (Int32(D8_F32_ROW_BIAS), p)
        }
        d8_f32_block(code, rows, columns, depth, packedA, packedB, c, ldc, mode, bias)
    }
}

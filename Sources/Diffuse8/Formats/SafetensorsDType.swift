/// The element types a safetensors header may name (the `dtype` strings of the Python/Rust library).
///
/// Every case can be read as Float32 by `SafetensorsFile.tensor(named:)`. Not supported: the
/// sub-byte and exotic types newer library versions added (F4, F6_*, F8_E8M0, C64); a file using
/// them is rejected with an error naming the tensor.
public enum SafetensorsDType: String, CaseIterable, Sendable, CustomStringConvertible {
    case bool = "BOOL"
    case u8 = "U8"
    case i8 = "I8"
    case f8E5M2 = "F8_E5M2"
    case f8E4M3 = "F8_E4M3"
    case i16 = "I16"
    case u16 = "U16"
    case f16 = "F16"
    case bf16 = "BF16"
    case i32 = "I32"
    case u32 = "U32"
    case f32 = "F32"
    case f64 = "F64"
    case i64 = "I64"
    case u64 = "U64"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .bool, .u8, .i8, .f8E5M2, .f8E4M3: return 1
        case .i16, .u16, .f16, .bf16: return 2
        case .i32, .u32, .f32: return 4
        case .f64, .i64, .u64: return 8
        }
    }

    /// Whether the type is a floating-point format.
    public var isFloatingPoint: Bool {
        switch self {
        case .f8E5M2, .f8E4M3, .f16, .bf16, .f32, .f64: return true
        default: return false
        }
    }

    public var description: String { rawValue }

    /// Position in the Rust library's `Dtype` enum (the declaration order above). The Python
    /// `save` writes tensors by descending rank, then by name, so larger elements come first and
    /// every tensor stays aligned to its element size.
    var serializationRank: Int { Self.allCases.firstIndex(of: self)! }
}

/// Scalar decoders for the narrow floating-point formats.
enum FloatDecoding {
    /// All 256 FP8 E4M3 values as defined by the OCP 8-bit floating point spec ("E4M3FN", as
    /// `torch.float8_e4m3fn`): exponent bias 7, subnormals when the exponent field is 0,
    /// no infinities, and S.1111.111 is NaN (so the largest finite value is ±448).
    static let e4m3Table: [Float] = (0..<256).map { e4m3ToFloat(UInt8($0)) }

    /// All 256 FP8 E5M2 values (IEEE-like: bias 15, subnormals, infinities and NaNs), as `torch.float8_e5m2`.
    static let e5m2Table: [Float] = (0..<256).map { e5m2ToFloat(UInt8($0)) }

    static func e4m3ToFloat(_ bits: UInt8) -> Float {
        let sign: Float = bits & 0x80 != 0 ? -1 : 1
        let exponent = Int((bits >> 3) & 0x0F)
        let mantissa = Float(bits & 0x07)
        if exponent == 15 && bits & 0x07 == 7 { return .nan }
        if exponent == 0 { return sign * mantissa / 8 * Float(sign: .plus, exponent: -6, significand: 1) }
        return sign * (1 + mantissa / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
    }

    static func e5m2ToFloat(_ bits: UInt8) -> Float {
        let sign: Float = bits & 0x80 != 0 ? -1 : 1
        let exponent = Int((bits >> 2) & 0x1F)
        let mantissa = Float(bits & 0x03)
        if exponent == 31 { return mantissa == 0 ? sign * .infinity : .nan }
        if exponent == 0 { return sign * mantissa / 4 * Float(sign: .plus, exponent: -14, significand: 1) }
        return sign * (1 + mantissa / 4) * Float(sign: .plus, exponent: exponent - 15, significand: 1)
    }

    /// bfloat16 is the top half of a Float32.
    @inline(__always)
    static func bf16ToFloat(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }
}

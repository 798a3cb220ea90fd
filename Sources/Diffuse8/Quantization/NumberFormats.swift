/// The 8-bit number formats of the quantizer and their exact rounding rules.
///
/// - INT8 symmetric: scale = amax / 127, q = clamp(roundHalfEven(x / scale), -128, 127), zero point 0
///   (`torch.clamp(torch.round(x / scale), -128, 127)`).
/// - FP8 E4M3 ("fn": no infinities, 0x7F/0xFF = NaN, max ±448): scale = amax / 448; x / scale is clamped
///   to ±448 and rounded to nearest even, subnormals down to 2^-9; |v| ≤ 2^-10 flushes to ±0; NaN stays NaN.
///   Bit-exact with `torch.clamp(v, -448, 448).to(torch.float8_e4m3fn)`.
///
/// A zero amax gives scale 1 (every value of such a tensor is 0 anyway), so no division by zero.
public enum QuantizedFormat: String, Sendable, CaseIterable, Codable {
    case int8
    case fp8

    /// The largest representable magnitude: 127 (INT8) or 448 (FP8 E4M3).
    public var maxValue: Float { self == .int8 ? 127 : 448 }

    /// The format as reports name it: "INT8" or "FP8 E4M3".
    public var reportName: String { self == .int8 ? "INT8" : "FP8 E4M3" }

    /// The safetensors dtype of stored codes.
    public var storageDType: SafetensorsDType { self == .int8 ? .i8 : .f8E4M3 }

    /// amax / maxValue, or 1 when amax is 0 (or not finite).
    public func scale(forAmax amax: Float) -> Float {
        amax > 0 && amax.isFinite ? amax / maxValue : 1
    }

    /// The stored byte of `x / scale`.
    @inline(__always)
    public func encode(_ x: Float, scale: Float) -> UInt8 {
        switch self {
        case .int8: return UInt8(bitPattern: Int8Codec.quantize(x / scale))
        case .fp8: return FP8E4M3.encode(x / scale)
        }
    }

    /// The real value of a stored byte.
    @inline(__always)
    public func decode(_ code: UInt8, scale: Float) -> Float {
        switch self {
        case .int8: return Float(Int8(bitPattern: code)) * scale
        case .fp8: return FP8E4M3.decode(code) * scale
        }
    }

    /// quantize → dequantize of one value (the "fake quantization" simulation uses).
    @inline(__always)
    public func fakeQuantize(_ x: Float, scale: Float) -> Float {
        switch self {
        case .int8: return Float(Int8Codec.quantize(x / scale)) * scale
        case .fp8: return FP8E4M3.rounded(x / scale) * scale
        }
    }

    /// Fake-quantizes `count` values in place with one scale.
    public func fakeQuantize(_ values: UnsafeMutablePointer<Float>, count: Int, scale: Float) {
        switch self {
        case .int8:
            for i in 0..<count { values[i] = Float(Int8Codec.quantize(values[i] / scale)) * scale }
        case .fp8:
            for i in 0..<count { values[i] = FP8E4M3.rounded(values[i] / scale) * scale }
        }
    }
}

/// Symmetric INT8 rounding: round half to even, clamp to [-128, 127]. NaN maps to 0 (torch's
/// float→int8 of NaN is undefined; quantized activations never contain NaN in a healthy model).
public enum Int8Codec {
    @inline(__always)
    public static func quantize(_ v: Float) -> Int8 {
        let r = v.rounded(.toNearestOrEven)
        if r >= 127 { return 127 }
        if r <= -128 { return -128 }
        if r.isNaN { return 0 }
        return Int8(r)
    }
}

/// FP8 E4M3 ("fn" variant, as `torch.float8_e4m3fn`): 1 sign, 4 exponent (bias 7), 3 mantissa bits.
public enum FP8E4M3 {
    /// Largest finite value.
    public static let maxFinite: Float = 448

    /// Encodes with saturation to ±448 and round-to-nearest-even (subnormals included).
    @inline(__always)
    public static func encode(_ v: Float) -> UInt8 {
        let sign: UInt8 = v.sign == .minus ? 0x80 : 0
        if v.isNaN { return sign | 0x7F }
        let a = min(abs(v), maxFinite)
        if a < 0.015625 {  // below 2^-6: subnormal grid of 2^-9 (code = multiple of 2^-9; 8 means 2^-6, a normal)
            return sign | UInt8((a * 512).rounded(.toNearestOrEven))
        }
        // Normal: round the float32 mantissa to 3 bits, nearest even; a carry moves into the exponent.
        let bits = a.bitPattern
        let rounded = bits &+ 0x7FFFF &+ ((bits >> 20) & 1)
        let exponent = Int(rounded >> 23) - 127 + 7
        let mantissa = UInt8((rounded >> 20) & 7)
        return sign | UInt8(exponent << 3) | mantissa
    }

    /// `decode(encode(v))` without the byte, branch-free so that loops over it vectorize: |v| saturated to 448 and
    /// rounded to nearest even on the grid of 2^(e−3) for |v| in [2^e, 2^(e+1)), e ≥ −6, or of 2^-9 below 2^-6; the
    /// sign kept (−0 for small negatives). Every step is exact in Float32 (a quotient and product by a power of 2, an
    /// integer rounding). NaN stays NaN (its payload may differ).
    @inline(__always)
    public static func rounded(_ v: Float) -> Float {
        let a = min(abs(v), maxFinite)
        let quantum = max(Float(bitPattern: a.bitPattern & 0x7F80_0000) * 0.125, 0.001953125)
        return Float(signOf: v, magnitudeOf: (a / quantum).rounded(.toNearestOrEven) * quantum)
    }

    /// Decodes to Float32 (exact).
    @inline(__always)
    public static func decode(_ code: UInt8) -> Float {
        let magnitude = code & 0x7F
        let negative = code & 0x80 != 0
        if magnitude == 0x7F { return negative ? -Float.nan : Float.nan }
        let exponent = Int(magnitude >> 3), mantissa = Float(magnitude & 7)
        let value: Float = exponent == 0 ? mantissa * 0.001953125  // m · 2^-9
            : (1 + mantissa / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
        return negative ? -value : value
    }
}

/// Weight quantization: INT8 per output channel, FP8 per tensor (or per channel on request).
public struct QuantizedWeight: Sendable {
    public let format: QuantizedFormat
    /// Shape of the weight ([O, I] or [O, I, kh, kw]).
    public let shape: [Int]
    /// One stored byte per element.
    public let codes: [UInt8]
    /// One scale per output channel, or a single scale for the whole tensor.
    public let scales: [Float]

    public init(format: QuantizedFormat, shape: [Int], codes: [UInt8], scales: [Float]) {
        self.format = format
        self.shape = shape
        self.codes = codes
        self.scales = scales
    }

    /// Quantizes `weight`; `perChannel` reduces amax over every dimension but the first.
    public init(quantizing weight: Tensor, format: QuantizedFormat, perChannel: Bool) {
        let rows = weight.shape[0], inner = weight.count / max(rows, 1)
        var scales: [Float] = []
        if perChannel {
            for o in 0..<rows {
                var amax: Float = 0
                for i in 0..<inner { amax = max(amax, abs(weight.scalars[o * inner + i])) }
                scales.append(format.scale(forAmax: amax))
            }
        } else {
            scales = [format.scale(forAmax: weight.scalars.reduce(0) { max($0, abs($1)) })]
        }
        var codes = [UInt8](repeating: 0, count: weight.count)
        for o in 0..<rows {
            let s = scales.count == 1 ? scales[0] : scales[o]
            for i in 0..<inner { codes[o * inner + i] = format.encode(weight.scalars[o * inner + i], scale: s) }
        }
        self.init(format: format, shape: weight.shape, codes: codes, scales: scales)
    }

    /// codes × scale as Float32, the weight simulated and real execution both compute with.
    public func dequantized() -> Tensor {
        let rows = shape[0], inner = codes.count / max(rows, 1)
        return Tensor(shape: shape) { out in
            for o in 0..<rows {
                let s = scales.count == 1 ? scales[0] : scales[o]
                for i in 0..<inner { out[o * inner + i] = format.decode(codes[o * inner + i], scale: s) }
            }
        }
    }
}

extension QuantizedWeight {
    /// A convolution weight [O, C, kh, kw] as [O, kh·kw·C]: the reduction reordered to (ky, kx, c), the order of
    /// channels-last inputs (each tap one contiguous run of C codes), as the CPU's INT8 kernels and cuDNN's 8-bit
    /// convolutions read it. Other shapes are returned unchanged.
    public func channelsLast() -> QuantizedWeight {
        guard shape.count == 4 else { return self }
        let o = shape[0], c = shape[1], taps = shape[2] * shape[3]
        var reordered = [UInt8](repeating: 0, count: codes.count)
        for oc in 0..<o {
            for ch in 0..<c {
                for t in 0..<taps { reordered[(oc * taps + t) * c + ch] = codes[(oc * c + ch) * taps + t] }
            }
        }
        return QuantizedWeight(format: format, shape: [o, taps * c], codes: reordered, scales: scales)
    }
}

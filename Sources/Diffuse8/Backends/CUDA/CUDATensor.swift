/// Element types a `CUDATensor` can hold.
public enum CUDADataType: String, Sendable, Equatable, Hashable, CaseIterable {
    /// IEEE half precision (5-bit exponent): the default storage type of every kernel here.
    case float16
    /// bfloat16 (8-bit exponent, FP32's range, 8 significant bits): the alternative storage type
    /// (`CUDAKernels.storageType`); overflow-free where FP16 saturates.
    case bfloat16
    case float32
    /// 8-bit codes of quantized weights and activations (INT8 two's complement; FP8 E4M3 "fn" bits, as
    /// `QuantizedFormat` encodes them) and the INT32 accumulators of INT8 GEMMs.
    case int8, float8e4m3, int32

    public var byteSize: Int {
        switch self {
        case .float32, .int32: return 4
        case .float16, .bfloat16: return 2
        case .int8, .float8e4m3: return 1
        }
    }

    /// FP32 → bfloat16 bits, rounding to nearest even (NaN stays NaN).
    static func bfloat16Bits(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return 0x7FC0 }
        return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }

    static func float(bfloat16Bits b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }
}

/// A dense, row-major tensor in GPU memory: the device counterpart of `Tensor`.
///
/// Layouts follow `Tensor` and `CPUKernels`: feature maps NCHW, token sequences [batch, tokens, channels].
/// The storage is reference-counted (`CUDABuffer`); `reshaped` shares it. All kernels take and return tensors of
/// the kernels' `storageType` (FP16 unless set to BF16) and compute in FP32.
public struct CUDATensor: @unchecked Sendable {
    public let buffer: CUDABuffer
    public var shape: [Int]
    public let dtype: CUDADataType

    public init(buffer: CUDABuffer, shape: [Int], dtype: CUDADataType) {
        precondition(buffer.byteCount >= shape.reduce(1, *) * dtype.byteSize, "buffer too small for \(shape)")
        self.buffer = buffer
        self.shape = shape
        self.dtype = dtype
    }

    public var count: Int { shape.reduce(1, *) }
    public var byteCount: Int { count * dtype.byteSize }
    /// The device address of the first element.
    public var address: UInt64 { buffer.address }

    /// The same storage seen with another shape of equal element count (-1 infers one dimension).
    public func reshaped(_ newShape: [Int]) -> CUDATensor {
        var resolved = newShape
        if let inferred = newShape.firstIndex(of: -1) {
            let known = newShape.enumerated().filter { $0.offset != inferred }.map(\.element).reduce(1, *)
            resolved[inferred] = count / known
        }
        precondition(resolved.reduce(1, *) == count, "reshape \(shape) → \(newShape) changes the element count")
        return CUDATensor(buffer: buffer, shape: resolved, dtype: dtype)
    }
}

extension CUDAContext {
    /// An uninitialised device tensor of `dtype` (`CUDAKernels.empty` makes one of the kernels' storage type).
    public func empty(_ shape: [Int], dtype: CUDADataType) throws -> CUDATensor {
        let bytes = shape.reduce(1, *) * dtype.byteSize
        return CUDATensor(buffer: try allocate(bytes: max(bytes, 1)), shape: shape, dtype: dtype)
    }

    /// Copies a host tensor to the device as `dtype`, rounding to nearest even (`CUDAKernels.upload` uses the
    /// kernels' storage type).
    public func upload(_ tensor: Tensor, dtype: CUDADataType) throws -> CUDATensor {
        let device = try empty(tensor.shape, dtype: dtype)
        switch dtype {
        case .bfloat16:
            let bits = tensor.scalars.map(CUDADataType.bfloat16Bits)
            try bits.withUnsafeBytes { try copyToDevice(device, from: $0.baseAddress!, bytes: device.byteCount) }
        case .float32:
            try tensor.scalars.withUnsafeBytes { try copyToDevice(device, from: $0.baseAddress!, bytes: device.byteCount) }
        case .float16:
            let halves = tensor.scalars.map { Float16($0) }
            try halves.withUnsafeBytes { try copyToDevice(device, from: $0.baseAddress!, bytes: device.byteCount) }
        case .int8, .float8e4m3, .int32:
            throw CUDAError.invalidArgument("upload: \(dtype) tensors are uploaded as codes (uploadCodes)")
        }
        return device
    }

    /// Copies 8-bit codes (one byte per element, `QuantizedWeight.codes`) to the device as an INT8 or FP8 tensor.
    public func uploadCodes(_ codes: [UInt8], shape: [Int], dtype: CUDADataType) throws -> CUDATensor {
        guard dtype.byteSize == 1, codes.count == shape.reduce(1, *) else {
            throw CUDAError.invalidArgument("uploadCodes: \(codes.count) codes as \(dtype) \(shape)")
        }
        let device = try empty(shape, dtype: dtype)
        try codes.withUnsafeBytes { try copyToDevice(device, from: $0.baseAddress!, bytes: device.byteCount) }
        return device
    }

    /// Copies a device tensor back to the host as Float32 (waits for the stream).
    public func download(_ tensor: CUDATensor) throws -> Tensor {
        switch tensor.dtype {
        case .float32: return Tensor(shape: tensor.shape, scalars: try downloadElements(tensor, as: Float.self))
        case .float16: return Tensor(shape: tensor.shape, scalars: try downloadElements(tensor, as: Float16.self).map { Float($0) })
        case .bfloat16:
            return Tensor(shape: tensor.shape, scalars: try downloadElements(tensor, as: UInt16.self).map { CUDADataType.float(bfloat16Bits: $0) })
        case .int8: return Tensor(shape: tensor.shape, scalars: try downloadElements(tensor, as: Int8.self).map { Float($0) })
        case .float8e4m3: return Tensor(shape: tensor.shape, scalars: try downloadElements(tensor, as: UInt8.self).map(FP8E4M3.decode))
        case .int32: return Tensor(shape: tensor.shape, scalars: try downloadElements(tensor, as: Int32.self).map { Float($0) })
        }
    }

    /// The tensor's raw elements as `T` (same size as its dtype), after the stream finished.
    private func downloadElements<T: Numeric>(_ tensor: CUDATensor, as type: T.Type) throws -> [T] {
        try makeCurrent()
        var elements = [T](repeating: 0, count: tensor.count)
        try elements.withUnsafeMutableBytes {
            try driver.check(driver.cuMemcpyDtoHAsync($0.baseAddress!, tensor.address, tensor.byteCount, stream.handle), "cuMemcpyDtoHAsync")
        }
        try synchronize()
        return elements
    }

    /// Fills a tensor with zero bits (queued).
    public func zero(_ tensor: CUDATensor) throws {
        try makeCurrent()
        try driver.check(driver.cuMemsetD16Async(tensor.address, 0, tensor.byteCount / 2, stream.handle), "cuMemsetD16Async")
    }

    /// Rows `indices` of a 16-bit tensor seen as [rows, last dimension], as Float32 (row copies; waits for the stream).
    public func downloadRows(_ tensor: CUDATensor, _ indices: [Int]) throws -> [[Float]] {
        let width = tensor.shape.last ?? 1, rows = tensor.count / max(width, 1), bytes = tensor.dtype.byteSize
        guard tensor.dtype.byteSize == 2, indices.allSatisfy({ (0..<rows).contains($0) }) else {
            throw CUDAError.invalidArgument("downloadRows: rows \(indices.prefix(4)) of a \(tensor.dtype) tensor \(tensor.shape)")
        }
        guard !indices.isEmpty else { return [] }
        try makeCurrent()
        var raw = [UInt16](repeating: 0, count: indices.count * width)
        try raw.withUnsafeMutableBytes { buffer in
            for (k, r) in indices.enumerated() {
                try driver.check(driver.cuMemcpyDtoHAsync(buffer.baseAddress! + k * width * bytes, tensor.address + UInt64(r * width * bytes),
                                                          width * bytes, stream.handle), "cuMemcpyDtoHAsync")
            }
            try synchronize()
        }
        let decode: (UInt16) -> Float = tensor.dtype == .bfloat16 ? CUDADataType.float(bfloat16Bits:) : { Float(Float16(bitPattern: $0)) }
        return (0..<indices.count).map { k in raw[(k * width)..<((k + 1) * width)].map(decode) }
    }

    /// Fills an FP16 or BF16 tensor with NaN (0xFFFF is NaN in both): tests poison outputs so an unwritten element shows up.
    public func poison(_ tensor: CUDATensor) throws {
        try makeCurrent()
        try driver.check(driver.cuMemsetD16Async(tensor.address, 0xFFFF, tensor.byteCount / 2, stream.handle), "cuMemsetD16Async")
    }

    /// Device-to-device copy of `bytes` bytes (offsets in bytes).
    package func copy(from source: UInt64, to destination: UInt64, bytes: Int) throws {
        try driver.check(driver.cuMemcpyDtoDAsync(destination, source, bytes, stream.handle), "cuMemcpyDtoDAsync")
    }

    private func copyToDevice(_ device: CUDATensor, from host: UnsafeRawPointer, bytes: Int) throws {
        try makeCurrent()
        try driver.check(driver.cuMemcpyHtoDAsync(device.address, host, bytes, stream.handle), "cuMemcpyHtoDAsync")
        // The host array dies when this returns: wait for the copy (pageable memory is staged anyway).
        try synchronize()
    }
}

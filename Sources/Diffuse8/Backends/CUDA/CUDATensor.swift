/// Element types a `CUDATensor` can hold.
public enum CUDADataType: Sendable, Equatable {
    /// IEEE half precision: the storage type of every kernel here.
    case float16
    case float32

    public var byteSize: Int { self == .float16 ? 2 : 4 }
}

/// A dense, row-major tensor in GPU memory: the device counterpart of `Tensor`.
///
/// Layouts follow `Tensor` and `CPUKernels`: feature maps NCHW, token sequences [batch, tokens, channels].
/// The storage is reference-counted (`CUDABuffer`); `reshaped` shares it. All kernels take and return
/// `.float16` tensors and compute in FP32.
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
    /// An uninitialised device tensor.
    public func empty(_ shape: [Int], dtype: CUDADataType = .float16) throws -> CUDATensor {
        let bytes = shape.reduce(1, *) * dtype.byteSize
        return CUDATensor(buffer: try allocate(bytes: max(bytes, 1)), shape: shape, dtype: dtype)
    }

    /// Copies a host tensor to the device, rounding to FP16 when `dtype` is `.float16` (round to nearest even).
    public func upload(_ tensor: Tensor, dtype: CUDADataType = .float16) throws -> CUDATensor {
        let device = try empty(tensor.shape, dtype: dtype)
        switch dtype {
        case .float32:
            try tensor.scalars.withUnsafeBytes { try copyToDevice(device, from: $0.baseAddress!, bytes: device.byteCount) }
        case .float16:
            let halves = tensor.scalars.map { Float16($0) }
            try halves.withUnsafeBytes { try copyToDevice(device, from: $0.baseAddress!, bytes: device.byteCount) }
        }
        return device
    }

    /// Copies a device tensor back to the host as Float32 (waits for the stream).
    public func download(_ tensor: CUDATensor) throws -> Tensor {
        try makeCurrent()
        switch tensor.dtype {
        case .float32:
            var scalars = [Float](repeating: 0, count: tensor.count)
            try scalars.withUnsafeMutableBytes {
                try driver.check(driver.cuMemcpyDtoHAsync($0.baseAddress!, tensor.address, tensor.byteCount, stream.handle),
                                 "cuMemcpyDtoHAsync")
            }
            try synchronize()
            return Tensor(shape: tensor.shape, scalars: scalars)
        case .float16:
            var halves = [Float16](repeating: 0, count: tensor.count)
            try halves.withUnsafeMutableBytes {
                try driver.check(driver.cuMemcpyDtoHAsync($0.baseAddress!, tensor.address, tensor.byteCount, stream.handle),
                                 "cuMemcpyDtoHAsync")
            }
            try synchronize()
            return Tensor(shape: tensor.shape, scalars: halves.map { Float($0) })
        }
    }

    /// Fills an FP16 tensor with NaN (0xFFFF): tests poison outputs so an unwritten element shows up.
    public func poison(_ tensor: CUDATensor) throws {
        try makeCurrent()
        try driver.check(driver.cuMemsetD16Async(tensor.address, 0xFFFF, tensor.byteCount / 2, stream.handle), "cuMemsetD16Async")
    }

    /// Device-to-device copy of `bytes` bytes (offsets in bytes).
    func copy(from source: UInt64, to destination: UInt64, bytes: Int) throws {
        try driver.check(driver.cuMemcpyDtoDAsync(destination, source, bytes, stream.handle), "cuMemcpyDtoDAsync")
    }

    private func copyToDevice(_ device: CUDATensor, from host: UnsafeRawPointer, bytes: Int) throws {
        try makeCurrent()
        try driver.check(driver.cuMemcpyHtoDAsync(device.address, host, bytes, stream.handle), "cuMemcpyHtoDAsync")
        // The host array dies when this returns: wait for the copy (pageable memory is staged anyway).
        try synchronize()
    }
}

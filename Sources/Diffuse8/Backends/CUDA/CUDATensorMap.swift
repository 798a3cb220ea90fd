/// A TMA descriptor (`CUtensorMap`, 128 opaque bytes) of a row-major 8-bit matrix, made by the driver's
/// `cuTensorMapEncodeTiled` and passed to kernels by value: the tensor-memory accelerator copies `boxRows` × 128-byte
/// tiles into shared memory in the 128-byte swizzle that `wgmma` reads, filling reads outside the matrix with zeros.
public struct CUDATensorMap: Sendable {
    static let byteCount = 128
    let words: [UInt64]
}

extension CUDAContext {
    /// The descriptor of `rows` × `columns` bytes at `address` (row stride `columns`), read in `boxRows` × 128-byte
    /// boxes. `columns` must be a multiple of 16 and `address` 16-byte aligned (TMA's rules).
    func tensorMap(_ address: UInt64, rows: Int, columns: Int, boxRows: Int) throws -> CUDATensorMap {
        guard let encode = driver.cuTensorMapEncodeTiled else {
            throw CUDAError.invalidArgument("this driver cannot make TMA descriptors (cuTensorMapEncodeTiled is missing)")
        }
        guard rows > 0, columns > 0, columns % 16 == 0, address % 16 == 0, (1...256).contains(boxRows) else {
            throw CUDAError.invalidArgument("TMA descriptor: \(rows)×\(columns) bytes at 0x\(String(address, radix: 16)), box \(boxRows) rows")
        }
        var words = [UInt64](repeating: 0, count: CUDATensorMap.byteCount / 8)
        let dimensions: [UInt64] = [UInt64(columns), UInt64(rows)], strides: [UInt64] = [UInt64(columns)]
        let box: [UInt32] = [128, UInt32(boxRows)], elementStrides: [UInt32] = [1, 1]
        // CU_TENSOR_MAP_DATA_TYPE_UINT8, no interleave, CU_TENSOR_MAP_SWIZZLE_128B, L2 promotion 128 B, zero fill
        let (uint8, noInterleave, swizzle128, l2Promotion128, zeroFill): (Int32, Int32, Int32, Int32, Int32) = (0, 0, 3, 2, 0)
        let result = words.withUnsafeMutableBytes { map in
            encode(map.baseAddress!, uint8, 2, UnsafeMutableRawPointer(bitPattern: UInt(address)), dimensions, strides, box,
                   elementStrides, noInterleave, swizzle128, l2Promotion128, zeroFill)
        }
        try driver.check(result, "cuTensorMapEncodeTiled(\(rows)×\(columns), box \(boxRows)×128)")
        return CUDATensorMap(words: words)
    }
}

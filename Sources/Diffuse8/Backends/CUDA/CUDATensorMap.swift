/// A TMA descriptor (`CUtensorMap`, 128 opaque bytes) of a row-major matrix of 8- or 16-bit elements, made by the
/// driver's `cuTensorMapEncodeTiled` and passed to kernels by value: the tensor-memory accelerator copies `boxRows` ×
/// 128-byte tiles between global and shared memory in the 128-byte swizzle that `wgmma` reads. Loads outside the
/// matrix read zeros; stores outside it are dropped.
public struct CUDATensorMap: Sendable {
    static let byteCount = 128
    let words: [UInt64]
}

extension CUDAContext {
    /// The descriptor of a `rows` × `columns` matrix of `elementBytes`-byte elements (1 or 2) at `address` (row stride
    /// `columns` elements), moved in boxes of `boxRows` rows × 128 bytes. Rows must be multiples of 16 bytes and
    /// `address` 16-byte aligned (TMA's rules). With `halves`, the matrix is seen as [2][rows / 2][columns] and a box
    /// holds `boxRows` rows of the first half followed by the same rows of the second (rows even).
    func tensorMap(_ address: UInt64, rows: Int, columns: Int, boxRows: Int, elementBytes: Int = 1,
                   halves: Bool = false) throws -> CUDATensorMap {
        guard let encode = driver.cuTensorMapEncodeTiled else {
            throw CUDAError.invalidArgument("this driver cannot make TMA descriptors (cuTensorMapEncodeTiled is missing)")
        }
        guard rows > 0, columns > 0, elementBytes == 1 || elementBytes == 2, (columns * elementBytes) % 16 == 0,
              address % 16 == 0, (1...256).contains(boxRows), !halves || rows % 2 == 0 else {
            throw CUDAError.invalidArgument("TMA descriptor: \(rows)×\(columns) elements of \(elementBytes) bytes at "
                                            + "0x\(String(address, radix: 16)), box \(boxRows) rows")
        }
        var words = [UInt64](repeating: 0, count: CUDATensorMap.byteCount / 8)
        let rowBytes = UInt64(columns * elementBytes)
        let dimensions: [UInt64] = halves ? [UInt64(columns), UInt64(rows / 2), 2] : [UInt64(columns), UInt64(rows)]
        let strides: [UInt64] = halves ? [rowBytes, rowBytes * UInt64(rows / 2)] : [rowBytes]
        let box: [UInt32] = [UInt32(128 / elementBytes), UInt32(boxRows)] + (halves ? [2] : [])
        let elementStrides = [UInt32](repeating: 1, count: box.count)
        // CU_TENSOR_MAP_DATA_TYPE_UINT8 / UINT16 (bytes are only moved), no interleave, CU_TENSOR_MAP_SWIZZLE_128B,
        // L2 promotion 128 B, zero fill
        let (dataType, noInterleave, swizzle128, l2Promotion128, zeroFill): (Int32, Int32, Int32, Int32, Int32) =
            (elementBytes == 1 ? 0 : 1, 0, 3, 2, 0)
        let result = words.withUnsafeMutableBytes { map in
            encode(map.baseAddress!, dataType, UInt32(box.count), UnsafeMutableRawPointer(bitPattern: UInt(address)), dimensions, strides, box,
                   elementStrides, noInterleave, swizzle128, l2Promotion128, zeroFill)
        }
        try driver.check(result, "cuTensorMapEncodeTiled(\(rows)×\(columns)×\(elementBytes) B, box \(boxRows)×128 B\(halves ? " ×2 halves" : ""))")
        return CUDATensorMap(words: words)
    }
}

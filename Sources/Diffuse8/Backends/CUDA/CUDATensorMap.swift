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
        guard !halves || rows % 2 == 0 else {
            throw CUDAError.invalidArgument("TMA descriptor: \(rows) rows cannot be seen as two halves")
        }
        return halves
            ? try tensorMap(address, extents: [columns, rows / 2, 2], box: [128 / elementBytes, boxRows, 2], elementBytes: elementBytes)
            : try tensorMap(address, extents: [columns, rows], box: [128 / elementBytes, boxRows], elementBytes: elementBytes)
    }

    /// The descriptor of a packed array of `elementBytes`-byte elements (1 or 2) at `address` with `extents`, innermost
    /// first (e.g. channels, width, height, images of a channels-last image batch), moved in boxes of `box` elements per
    /// dimension whose innermost side is 128 or 64 bytes in the swizzle of that width, or (`swizzled` false) 16…128
    /// bytes, a multiple of 16, packed. Every stride must be a multiple of 16 bytes, `address` 16-byte aligned, and each box side
    /// 1…256 elements (TMA's rules).
    func tensorMap(_ address: UInt64, extents: [Int], box: [Int], elementBytes: Int = 1, swizzled: Bool = true) throws -> CUDATensorMap {
        guard let encode = driver.cuTensorMapEncodeTiled else {
            throw CUDAError.invalidArgument("this driver cannot make TMA descriptors (cuTensorMapEncodeTiled is missing)")
        }
        guard (2...5).contains(extents.count), box.count == extents.count, elementBytes == 1 || elementBytes == 2,
              extents.allSatisfy({ $0 > 0 && $0 <= 1 << 31 }), box.allSatisfy({ (1...256).contains($0) }),
              swizzled ? [64, 128].contains(box[0] * elementBytes) : box[0] * elementBytes <= 128 && (box[0] * elementBytes) % 16 == 0,
              (extents[0] * elementBytes) % 16 == 0, address % 16 == 0 else {
            throw CUDAError.invalidArgument("TMA descriptor: extents \(extents) of \(elementBytes)-byte elements at "
                                            + "0x\(String(address, radix: 16)), box \(box)")
        }
        var words = [UInt64](repeating: 0, count: CUDATensorMap.byteCount / 8)
        let dimensions = extents.map { UInt64($0) }
        // byte strides of dimensions 1…: each the previous one times its extent
        var strides: [UInt64] = []
        var stride = UInt64(elementBytes)
        for extent in dimensions.dropLast() {
            stride *= extent
            strides.append(stride)
        }
        let boxSides = box.map { UInt32($0) }
        let elementStrides = [UInt32](repeating: 1, count: box.count)
        // CU_TENSOR_MAP_DATA_TYPE_UINT8 / UINT16 (bytes are only moved), no interleave, CU_TENSOR_MAP_SWIZZLE_128B or
        // _64B by the box row's width (or _NONE), L2 promotion 128 B, zero fill
        let swizzle: Int32 = swizzled ? (box[0] * elementBytes == 128 ? 3 : 2) : 0
        let (dataType, noInterleave, l2Promotion128, zeroFill): (Int32, Int32, Int32, Int32) = (elementBytes == 1 ? 0 : 1, 0, 2, 0)
        let result = words.withUnsafeMutableBytes { map in
            encode(map.baseAddress!, dataType, UInt32(boxSides.count), UnsafeMutableRawPointer(bitPattern: UInt(address)), dimensions, strides,
                   boxSides, elementStrides, noInterleave, swizzle, l2Promotion128, zeroFill)
        }
        try driver.check(result, "cuTensorMapEncodeTiled(extents \(extents) × \(elementBytes) B, box \(box))")
        return CUDATensorMap(words: words)
    }
}

/// An INT8 weight [O, K] (a Linear's [O, I], a convolution's [O, C·kh·kw]) packed once at load into the
/// micro-kernel's layout: panels of NR output channels, each [K/4][NR][4] bytes (4 consecutive k of one channel
/// together, K padded to a multiple of 4 and O to NR with zeros), plus per channel 128 · Σk code (the u8 × s8
/// instructions' compensation) and the dequantization scale.
final class CPUInt8PackedWeight: @unchecked Sendable {
    let outputs: Int
    let depth: Int
    /// K / 4, rounded up.
    let kGroups: Int
    let panels: Int
    let codes: UnsafeMutablePointer<Int8>
    let compensation: UnsafeMutablePointer<Int32>
    /// One scale per output channel (a per-tensor scale repeated), padded with zeros to the panels' width.
    let scales: UnsafeMutablePointer<Float>

    /// Bytes held (packed codes + compensation).
    var byteCount: Int { panels * kGroups * CPUInt8Kernel.tileColumns * 4 + panels * CPUInt8Kernel.tileColumns * 4 }

    init(_ weight: QuantizedWeight) {
        precondition(weight.format == .int8, "CPUInt8PackedWeight holds INT8 codes")
        let nr = CPUInt8Kernel.tileColumns
        outputs = weight.shape[0]
        depth = weight.codes.count / max(outputs, 1)
        kGroups = (depth + 3) / 4
        panels = (outputs + nr - 1) / nr
        scales = .allocate(capacity: panels * nr)
        scales.initialize(repeating: 0, count: panels * nr)
        for o in 0..<outputs { scales[o] = weight.scales.count == 1 ? weight.scales[0] : weight.scales[o] }
        let count = panels * kGroups * nr * 4
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 64), alignment: 64)
        codes = raw.bindMemory(to: Int8.self, capacity: max(count, 64))
        codes.initialize(repeating: 0, count: max(count, 64))
        compensation = .allocate(capacity: panels * nr)
        compensation.initialize(repeating: 0, count: panels * nr)
        weight.codes.withUnsafeBufferPointer { source in
            for o in 0..<outputs {
                let panel = o / nr, column = o % nr
                var sum: Int32 = 0
                for k in 0..<depth {
                    let v = Int8(bitPattern: source[o * depth + k])
                    codes[((panel * kGroups + k / 4) * nr + column) * 4 + k % 4] = v
                    sum += Int32(v)
                }
                compensation[o] = 128 * sum
            }
        }
    }

    deinit {
        UnsafeMutableRawPointer(codes).deallocate()
        compensation.deallocate()
        scales.deallocate()
    }

    func panel(_ p: Int) -> UnsafePointer<Int8> { UnsafePointer(codes + p * kGroups * CPUInt8Kernel.tileColumns * 4) }
}

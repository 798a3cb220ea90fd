import Foundation

/// A layer's FP32 weight packed once into the SGEMM's sliver layout for one kernel (`CPUFloatKernel`), so the
/// layer's products skip packing it on every call. Linear: the weight [N, K] as a whole `.prepacked` B
/// (`Gemm.packB`); Conv2d: the weight [O, C·kh·kw] as a whole prepacked A (`Gemm.packA`). The only extra floats are
/// the zero padding of N (or O) up to the kernel's NR (or MR). `unpacked()` gives the plain weight back.
final class PackedGemmWeight: @unchecked Sendable {
    /// Which operand of the product the weight is.
    enum Role { case linearB, convolutionA }

    let role: Role
    let kernel: CPUFloatKernel
    /// The plain weight's shape ([out, in] or [O, C, kh, kw]).
    let shape: [Int]
    /// Output features / channels (N for Linear, M for Conv2d) and the depth K.
    let outputs: Int, depth: Int
    let storage: UnsafeMutableBufferPointer<Float>

    init(_ weight: Tensor, role: Role, kernel: CPUFloatKernel) {
        self.role = role
        self.kernel = kernel
        shape = weight.shape
        outputs = weight.shape.first ?? 0
        depth = outputs == 0 ? 0 : weight.count / outputs
        let count = role == .linearB ? depth * Gemm.paddedColumns(outputs, kernel)
                                     : Gemm.packedACount(kernel: kernel, m: outputs, k: depth)
        storage = .allocate(capacity: max(count, 1))
        guard count > 0 else { return }
        weight.scalars.withUnsafeBufferPointer { w in
            switch role {
            case .linearB:
                Gemm.packB(kernel: kernel, k: depth, n: outputs, b: w.baseAddress!, ldb: depth, layout: .transposed,
                           into: storage.baseAddress!)
            case .convolutionA:
                Gemm.packA(kernel: kernel, m: outputs, k: depth, a: w.baseAddress!, lda: depth, into: storage.baseAddress!)
            }
        }
    }

    deinit { storage.deallocate() }

    var pointer: UnsafePointer<Float> { UnsafePointer(storage.baseAddress!) }

    /// The plain weight, read back from the packed slivers.
    func unpacked() -> Tensor {
        Tensor(shape: shape) { out in
            guard depth > 0 else { return }
            let w = out.baseAddress!, packed = storage.baseAddress!
            var p0 = 0
            while p0 < depth {
                let kc = min(kernel.depthBlock, depth - p0)
                switch role {
                case .linearB:
                    let nr = kernel.tileColumns, slice = packed + p0 * Gemm.paddedColumns(outputs, kernel)
                    for j in 0..<outputs {
                        let sliver = slice + (j / nr) * nr * kc + j % nr
                        for p in 0..<kc { w[j * depth + p0 + p] = sliver[p * nr] }
                    }
                case .convolutionA:
                    let mr = kernel.tileRows, paddedRows = (outputs + mr - 1) / mr * mr
                    for i in 0..<outputs {
                        let sliver = packed + Gemm.prepackedOffset(row: i / mr * mr, depth: p0, paddedRows: paddedRows, kc: kc) + i % mr
                        for p in 0..<kc { w[i * depth + p0 + p] = sliver[p * mr] }
                    }
                }
                p0 += kc
            }
        }
    }
}

/// A Linear or Conv2d layer's FP32 weight, held once: plain until the layer's first FP32 product, then only packed
/// for the kernel that runs (`packed(for:role:)`); reading it back (`tensor`) unpacks it, assigning a new weight
/// (LoRA merging, `releaseHostWeight`) drops the pack. Thread-safe: concurrent products pack once.
final class LayerWeightStorage: @unchecked Sendable {
    private let lock = NSLock()
    private var plain: Tensor?
    private var packedWeight: PackedGemmWeight?

    init(_ weight: Tensor) { plain = weight }

    /// The plain weight (unpacked from the pack when only that is held).
    var tensor: Tensor {
        get { lock.withLock { plain ?? packedWeight!.unpacked() } }
        set { lock.withLock { plain = newValue; packedWeight = nil } }
    }

    /// The weight's shape without unpacking.
    var shape: [Int] { lock.withLock { plain?.shape ?? packedWeight!.shape } }

    /// The weight packed for `kernel` in `role`; packs (and drops the plain copy) on first use, re-packs when another
    /// kernel is asked for (a forced variant in tests or benchmarks).
    func packed(for kernel: CPUFloatKernel, role: PackedGemmWeight.Role) -> PackedGemmWeight {
        lock.withLock {
            if let packedWeight, packedWeight.kernel == kernel, packedWeight.role == role { return packedWeight }
            let weight = plain ?? packedWeight!.unpacked()
            let made = PackedGemmWeight(weight, role: role, kernel: kernel)
            plain = nil
            packedWeight = made
            return made
        }
    }
}

/// Single-precision matrix multiplication on the CPU: a blocked, packed SGEMM in the BLIS style.
///
/// C is cut into column tiles of `tileColumns` and runs of row tiles of 16·MR rows; each (column tile,
/// row run) is one task, and workers pull tasks from a shared counter (`TaskCounter`). Within a task,
/// for each `depthBlock` slice of K the worker packs B's slice into NR-wide column slivers (once, reused
/// by the whole row run) and A's slice into MR-tall row slivers, then runs the register-tiled
/// micro-kernel over every MR × NR block. When several column tiles share A, A is packed once up front
/// instead; a layer's weight is packed once for all calls (`PackedGemmWeight`). Packing (zero-padded at the
/// edges) lets any operand layout — row-major, transposed, strided, or generated on the fly like im2col — feed
/// the same micro-kernel with unit-stride loads. Sums run over K in order within a slice, so results differ
/// from PyTorch's BLAS only by float32 rounding (relative L2 ~1e-7 on the reference tests).
///
/// The micro-kernel, and with it MR and NR, is picked at run time (`CPUFloatKernel.active`: AVX-512, AVX2 or
/// the portable Swift kernel); `mr`/`nr` are the active kernel's, which `.packed` B functions must use.
enum Gemm {
    /// Micro-tile height (rows of A per kernel call) and width (columns of B) of the active kernel.
    static var mr: Int { CPUFloatKernel.active.tileRows }
    static var nr: Int { CPUFloatKernel.active.tileColumns }
    /// Depth of one packed slice of the active kernel (`CPUFloatKernel.depthBlock`).
    static var depthBlock: Int { CPUFloatKernel.active.depthBlock }
    /// Row tiles per task are 16 micro-tiles tall; columns of C per parallel task (the packed A and B slices stay in L2).
    static let rowTileSlivers = 16
    static let tileColumns = 384

    /// How B is laid out in memory.
    enum BLayout {
        /// B is [N, K] row-major with row stride `ldb` (the weight of a linear layer, or keys in attention).
        case transposed
        /// B is [K, N] row-major with row stride `ldb` (an NCHW feature map seen as [C, HW], or values).
        case rowMajor
        /// B is produced slice by slice by a packing function (implicit im2col in convolutions):
        /// `pack(p0, depth, j0, columns, out)` writes B[p0..<p0+depth, j0..<j0+columns] in the packed
        /// sliver layout of `GemmPacking` (NR-wide slivers, zero-padded past `columns`).
        case packed((_ p0: Int, _ depth: Int, _ j0: Int, _ columns: Int, _ out: UnsafeMutablePointer<Float>) -> Void)
        /// B already packed whole by `Gemm.packB` (reused by several products, e.g. keys and values
        /// shared by every query block of an attention head). `paddedColumns` = N rounded up to NR.
        case prepacked(UnsafePointer<Float>, paddedColumns: Int)
    }

    /// Floats needed to pack a whole K × N matrix B with `packB`.
    static func packedBCount(k: Int, n: Int) -> Int { k * paddedColumns(n, kernel(columns: n)) }

    /// N rounded up to the NR of the kernel a product with N columns runs on (`kernel(columns:)`): the
    /// `paddedColumns` of a `.prepacked` B made by `packB`.
    static func paddedColumns(_ n: Int) -> Int { paddedColumns(n, kernel(columns: n)) }

    /// N rounded up to the NR of `kernel`.
    static func paddedColumns(_ n: Int, _ kernel: CPUFloatKernel) -> Int {
        (n + kernel.tileColumns - 1) / kernel.tileColumns * kernel.tileColumns
    }

    /// The kernel for a product with `n` columns on a B packed whole by `packB`: the active one, except that an N
    /// that would leave more than 1/8 of the AVX-512 tile's columns empty (attention with 40 or 77 columns) runs on
    /// the 16-wide AVX2 tile. `packB` and `multiply` with `.prepacked` choose alike, so the layouts always match.
    static func kernel(columns n: Int) -> CPUFloatKernel {
        let active = CPUFloatKernel.active
        guard active == .avx512, CPUFloatKernel.avx2.isSupported else { return active }
        let waste = paddedColumns(n, active) - n
        return waste * 8 > n && paddedColumns(n, .avx2) < paddedColumns(n, active) ? .avx2 : active
    }

    /// Packs all of B (K × N, `layout` .transposed or .rowMajor, row stride `ldb`) for `.prepacked`:
    /// K slices of `depthBlock` one after another, each holding every NR-wide column sliver.
    static func packB(k: Int, n: Int, b: UnsafePointer<Float>, ldb: Int, layout: BLayout, into out: UnsafeMutablePointer<Float>) {
        packB(kernel: kernel(columns: n), k: k, n: n, b: b, ldb: ldb, layout: layout, into: out)
    }

    /// `.packed` B (a packing function) is packed through it, K slice by K slice; in parallel over the slices
    /// unless `parallel` is false.
    static func packB(kernel: CPUFloatKernel, k: Int, n: Int, b: UnsafePointer<Float>, ldb: Int, layout: BLayout,
                      into out: UnsafeMutablePointer<Float>, parallel: Bool = false) {
        let paddedColumns = paddedColumns(n, kernel), nr = kernel.tileColumns
        let slices = (k + kernel.depthBlock - 1) / kernel.depthBlock
        let packSlice = { (slice: Int) in
            let p0 = slice * kernel.depthBlock, kc = min(kernel.depthBlock, k - p0)
            switch layout {
            case .transposed:
                GemmPacking.packBTransposed(b + p0, ldb: ldb, columns: n, depth: kc, nr: nr, into: out + p0 * paddedColumns)
            case .rowMajor:
                GemmPacking.packBRowMajor(b + p0 * ldb, ldb: ldb, columns: n, depth: kc, nr: nr, into: out + p0 * paddedColumns)
            case .packed(let pack):
                pack(p0, kc, 0, n, out + p0 * paddedColumns)
            case .prepacked: preconditionFailure("Gemm.packB: B is packed already")
            }
        }
        if parallel && slices > 1 { parallelForDynamic(slices, packSlice) } else { for slice in 0..<slices { packSlice(slice) } }
    }

    /// Floats needed to pack a whole M × K matrix A with `packA` for `kernel` (M rounded up to MR).
    static func packedACount(kernel: CPUFloatKernel, m: Int, k: Int) -> Int {
        (m + kernel.tileRows - 1) / kernel.tileRows * kernel.tileRows * k
    }

    /// Packs all of A (A(i, p) = a[i·lda + p]) for `kernel`: K slices of `depthBlock`, each every MR-tall row sliver
    /// (see `prepackedOffset`). Parallel over (row tile, slice) pairs unless `parallel` is false.
    static func packA(kernel: CPUFloatKernel, m: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                      into packed: UnsafeMutablePointer<Float>, parallel: Bool = true) {
        let mr = kernel.tileRows, tileRows = rowTileSlivers * mr
        let paddedRows = (m + mr - 1) / mr * mr
        let slices = (k + kernel.depthBlock - 1) / kernel.depthBlock
        let rowTiles = (m + tileRows - 1) / tileRows
        let pack = { (item: Int) in
            let i0 = (item / slices) * tileRows, p0 = (item % slices) * kernel.depthBlock
            let tile = min(tileRows, m - i0), kc = min(kernel.depthBlock, k - p0)
            GemmPacking.packA(a + i0 * lda + p0, lda: lda, rows: tile, depth: kc, mr: mr,
                              into: packed + prepackedOffset(row: i0, depth: p0, paddedRows: paddedRows, kc: kc))
        }
        if parallel { parallelForDynamic(rowTiles * slices, pack) } else { for i in 0..<(rowTiles * slices) { pack(i) } }
    }

    /// Where A comes from.
    enum ASource {
        /// A(i, p) = a[i·lda + p].
        case matrix(UnsafePointer<Float>, lda: Int)
        /// Packed whole by `packA` for the kernel the product runs with.
        case prepacked(UnsafePointer<Float>)
    }

    /// A value added to every element of C when it is first written.
    enum Bias {
        case none
        /// `bias[j]` added to column j (linear layers).
        case perColumn(UnsafePointer<Float>)
        /// `bias[i]` added to row i (convolutions computed as W · columns).
        case perRow(UnsafePointer<Float>)
    }

    /// C[m×n] = A[m×k] · B[n×k]ᵀ, all row-major and contiguous. C is overwritten.
    static func multiplyTransposedB(a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>,
                                    m: Int, n: Int, k: Int) {
        multiply(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: k, bLayout: .transposed, c: c, ldc: n)
    }

    /// C[m×n] = A[m×k] · B[k×n], all row-major and contiguous. C is overwritten.
    static func multiply(a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>,
                         m: Int, n: Int, k: Int) {
        multiply(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, bLayout: .rowMajor, c: c, ldc: n)
    }

    /// General form: C = A·B (+ bias) (+ C when `accumulate`), with row strides for every operand.
    /// A(i, p) = a[i·lda + p]; B(p, j) = b[j·ldb + p] (transposed) or b[p·ldb + j] (rowMajor);
    /// C(i, j) = c[i·ldc + j].
    ///
    /// - Parameter parallel: split the tiles over `CPUConfiguration.threadCount` workers. Pass false
    ///   when already inside a parallel region (attention runs one GEMM per worker).
    static func multiply(m: Int, n: Int, k: Int,
                         a: UnsafePointer<Float>, lda: Int,
                         b: UnsafePointer<Float>, ldb: Int, bLayout: BLayout,
                         c: UnsafeMutablePointer<Float>, ldc: Int,
                         bias: Bias = .none, accumulate: Bool = false, parallel: Bool = true) {
        // `.prepacked` B comes from `packB`, which may pick a narrower tile; every other product runs on the active
        // kernel (so a layer and its simulation or FP8 expansion round alike).
        let kernel: CPUFloatKernel
        if case .prepacked = bLayout { kernel = Self.kernel(columns: n) } else { kernel = CPUFloatKernel.active }
        multiply(kernel: kernel, m: m, n: n, k: k, a: .matrix(a, lda: lda), b: b, ldb: ldb, bLayout: bLayout,
                 c: c, ldc: ldc, bias: bias, accumulate: accumulate, parallel: parallel)
    }

    /// The general form with the kernel chosen by the caller (it must match every packed operand).
    static func multiply(kernel: CPUFloatKernel, m: Int, n: Int, k: Int, a source: ASource,
                         b: UnsafePointer<Float>, ldb: Int, bLayout: BLayout,
                         c: UnsafeMutablePointer<Float>, ldc: Int,
                         bias: Bias = .none, accumulate: Bool = false, parallel: Bool = true) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + biasValue(bias, i, j) } }
            return
        }
        let mr = kernel.tileRows, nr = kernel.tileColumns
        // A task is one column tile × a run of rows: its packed B slice is reused by every row tile of
        // the run. Tasks are sized so there are at least 4 per worker and their count is a multiple of
        // the worker count, so no worker is left with one extra task at the end.
        let workers = parallel && m * n * k >= minimumParallelProducts ? CPUConfiguration.threadCount : 1
        let rowSlivers = (m + mr - 1) / mr
        var columnTiles = (n + tileColumns - 1) / tileColumns
        var rowChunks = 1
        if workers > 1 {
            if columnTiles >= 2 * workers {
                columnTiles = (columnTiles + workers - 1) / workers * workers
            } else {
                rowChunks = min(rowSlivers, (4 * workers + columnTiles - 1) / columnTiles)
                while (rowChunks * columnTiles) % workers != 0 && rowChunks < rowSlivers { rowChunks += 1 }
            }
        }
        let tileWidth = ((n + columnTiles - 1) / columnTiles + nr - 1) / nr * nr
        columnTiles = (n + tileWidth - 1) / tileWidth
        let chunkRows = ((m + rowChunks - 1) / rowChunks + mr - 1) / mr * mr
        rowChunks = (m + chunkRows - 1) / chunkRows
        if rowChunks > 1, case .packed = bLayout, k * Self.paddedColumns(n, kernel) <= maximumPrepackedB {
            // Each row chunk would pack the same B slices of its column tile again: pack all of B once (a convolution's
            // implicit im2col at a small output, the costliest packing) and run on it, in the same K order per element.
            let paddedColumns = Self.paddedColumns(n, kernel)
            return ScratchPool.with(count: k * paddedColumns) { whole in
                packB(kernel: kernel, k: k, n: n, b: b, ldb: ldb, layout: bLayout, into: whole, parallel: parallel)
                multiply(kernel: kernel, m: m, n: n, k: k, a: source, b: b, ldb: ldb,
                         bLayout: .prepacked(whole, paddedColumns: paddedColumns), c: c, ldc: ldc, bias: bias,
                         accumulate: accumulate, parallel: parallel)
            }
        }
        let tasks = rowChunks * columnTiles
        let tileRows = rowTileSlivers * mr
        let scratchCount = tileRows * kernel.depthBlock + (tileColumns + nr) * kernel.depthBlock
        let paddedRows = (m + mr - 1) / mr * mr
        let run = { (prepackedA: UnsafePointer<Float>?, a: UnsafePointer<Float>, lda: Int) in
            let body = { (task: Int, scratch: UnsafeMutablePointer<Float>) in
                let chunk = task % rowChunks, columnTile = task / rowChunks
                let firstRow = chunk * chunkRows, endRow = min(m, firstRow + chunkRows)
                let j0 = columnTile * tileWidth
                if firstRow < endRow {
                    computeTask(kernel: kernel, rows: firstRow..<endRow, columns: j0..<min(n, j0 + tileWidth), k: k,
                                a: a, lda: lda, paddedRows: paddedRows,
                                prepackedA: prepackedA, b: b, ldb: ldb, bLayout: bLayout, c: c, ldc: ldc, bias: bias,
                                accumulate: accumulate, scratch: scratch)
                }
            }
            let activeWorkers = min(workers, tasks)
            if activeWorkers <= 1 {
                ScratchPool.with(count: scratchCount) { scratch in for t in 0..<tasks { body(t, scratch) } }
                return
            }
            let counter = TaskCounter()
            runOnWorkers(activeWorkers) { _ in
                ScratchPool.with(count: scratchCount) { scratch in
                    while let t = counter.next(below: tasks) { body(t, scratch) }
                }
            }
        }
        switch source {
        case .prepacked(let packed):
            run(packed, packed, 0)
        case .matrix(let a, let lda):
            // A is reused by every column tile: when there are several, pack all of it once up front
            // instead of once per task (e.g. a convolution's weights over 11 column tiles at 64×64).
            if columnTiles > 1 && paddedRows * k <= maximumPrepackedA {
                ScratchPool.with(count: paddedRows * k) { packed in
                    packA(kernel: kernel, m: m, k: k, a: a, lda: lda, into: packed, parallel: parallel)
                    run(packed, a, lda)
                }
            } else {
                run(nil, a, lda)
            }
        }
    }

    /// Largest A (in floats) packed whole up front.
    static let maximumPrepackedA = 8 << 20
    /// Multiply-adds below which a product runs on the calling thread alone: waking the workers costs more than they
    /// save there (measured on the default model's UNet, 2 cores). Which thread computes a tile does not change it.
    static let minimumParallelProducts = 4 << 20

    /// Largest `.packed` B (in floats) packed whole up front.
    static let maximumPrepackedB = 8 << 20

    /// Where the slivers of rows from `row` (a multiple of MR) in the K slice at `depth` (depth `kc`)
    /// start in a whole packed A: K slices one after another, each all row slivers (rows padded to MR).
    @inline(__always)
    static func prepackedOffset(row: Int, depth: Int, paddedRows: Int, kc: Int) -> Int {
        depth * paddedRows + row * kc
    }

    @inline(__always)
    static func biasValue(_ bias: Bias, _ i: Int, _ j: Int) -> Float {
        switch bias {
        case .none: return 0
        case .perColumn(let p): return p[j]
        case .perRow(let p): return p[i]
        }
    }

    /// One task: a column tile of C over a run of rows. Loops over K slices; packs B once per slice
    /// and A once per (slice, row tile) unless A was packed up front, and runs the micro-kernel over every MR × NR block.
    /// A B packed whole (`.prepacked`: layer weights, attention) is read in place, row tile by row tile.
    @inline(__always)
    static func computeTask(kernel: CPUFloatKernel, rows: Range<Int>, columns columnRange: Range<Int>, k: Int,
                            a: UnsafePointer<Float>, lda: Int, paddedRows: Int, prepackedA: UnsafePointer<Float>?,
                            b: UnsafePointer<Float>, ldb: Int, bLayout: BLayout,
                            c: UnsafeMutablePointer<Float>, ldc: Int, bias: Bias, accumulate: Bool,
                            scratch: UnsafeMutablePointer<Float>) {
        let j0 = columnRange.lowerBound, columns = columnRange.count
        let mr = kernel.tileRows, nr = kernel.tileColumns, tileRows = rowTileSlivers * mr
        /// C[i0..<i0+tile, columns] (+)= A[i0..<i0+tile, p0..<p0+kc] · packedB.
        func rowTile(_ i0: Int, _ tile: Int, _ p0: Int, _ kc: Int, _ packedB: UnsafePointer<Float>) {
            let packedA: UnsafePointer<Float>
            if let prepackedA {
                packedA = prepackedA + prepackedOffset(row: i0, depth: p0, paddedRows: paddedRows, kc: kc)
            } else {
                packedA = UnsafePointer(scratch)
                GemmPacking.packA(a + i0 * lda + p0, lda: lda, rows: tile, depth: kc, mr: mr, into: scratch)
            }
            let target = c + i0 * ldc + j0
            let initial = GemmMicroKernel.Initial(bias: p0 == 0 && !accumulate ? bias.offset(rows: i0, columns: j0) : nil)
            if kernel == .portable {
                macroKernel(rows: tile, columns: columns, depth: kc, packedA: packedA, packedB: packedB,
                            c: target, ldc: ldc, initial: initial)
            } else {
                kernel.block(rows: tile, columns: columns, depth: kc, packedA: packedA, packedB: packedB,
                             c: target, ldc: ldc, initial: initial)
            }
        }
        if case .prepacked(let whole, let paddedColumns) = bLayout {
            // B needs no packing here: each row tile runs through all of K while its block of C stays in L2
            // (the same K order per element as below, so the same rounding).
            var i0 = rows.lowerBound
            while i0 < rows.upperBound {
                let tile = min(tileRows, rows.upperBound - i0)
                var p0 = 0
                while p0 < k {
                    let kc = min(kernel.depthBlock, k - p0)
                    rowTile(i0, tile, p0, kc, whole + p0 * paddedColumns + j0 * kc)
                    p0 += kc
                }
                i0 += tile
            }
            return
        }
        let packedB = scratch + tileRows * kernel.depthBlock
        var p0 = 0
        while p0 < k {
            let kc = min(kernel.depthBlock, k - p0)
            switch bLayout {
            case .transposed:
                GemmPacking.packBTransposed(b + j0 * ldb + p0, ldb: ldb, columns: columns, depth: kc, nr: nr, into: packedB)
            case .rowMajor:
                GemmPacking.packBRowMajor(b + p0 * ldb + j0, ldb: ldb, columns: columns, depth: kc, nr: nr, into: packedB)
            case .packed(let pack): pack(p0, kc, j0, columns, packedB)
            case .prepacked: preconditionFailure("handled above")
            }
            var i0 = rows.lowerBound
            while i0 < rows.upperBound {
                let tile = min(tileRows, rows.upperBound - i0)
                rowTile(i0, tile, p0, kc, packedB)
                i0 += tile
            }
            p0 += kc
        }
    }

    /// C[rows × columns] (+)= packedA · packedB for one K slice with the portable Swift micro-kernel.
    @inline(__always)
    static func macroKernel(rows: Int, columns: Int, depth kc: Int,
                            packedA: UnsafePointer<Float>, packedB: UnsafePointer<Float>,
                            c: UnsafeMutablePointer<Float>, ldc: Int, initial: GemmMicroKernel.Initial) {
        let mr = GemmMicroKernel.mr, nr = GemmMicroKernel.nr
        let rowSlivers = (rows + mr - 1) / mr, columnSlivers = (columns + nr - 1) / nr
        for js in 0..<columnSlivers {
            let jj = js * nr, nValid = min(nr, columns - jj)
            let bSliver = packedB + js * nr * kc
            for isl in 0..<rowSlivers {
                let ii = isl * mr, mValid = min(mr, rows - ii)
                GemmMicroKernel.run(depth: kc, a: packedA + isl * mr * kc, b: bSliver,
                                    c: c + ii * ldc + jj, ldc: ldc, rows: mValid, columns: nValid,
                                    initial: initial.offset(rows: ii, columns: jj))
            }
        }
    }
}

extension GemmMicroKernel.Initial {
    /// nil = accumulate into C; otherwise overwrite C with the product plus `bias`.
    init(bias: Gemm.Bias?) {
        switch bias {
        case nil: self = .accumulate
        case .some(.none): self = .zero
        case .some(.perColumn(let p)): self = .columnBias(p)
        case .some(.perRow(let p)): self = .rowBias(p)
        }
    }

    /// The same initial state seen from the tile starting at (rows, columns).
    func offset(rows: Int, columns: Int) -> Self {
        switch self {
        case .zero, .accumulate: return self
        case .columnBias(let p): return .columnBias(p + columns)
        case .rowBias(let p): return .rowBias(p + rows)
        }
    }
}

extension Gemm.Bias {
    /// The same bias seen from the block starting at (rows, columns).
    func offset(rows: Int, columns: Int) -> Gemm.Bias {
        switch self {
        case .none: return .none
        case .perColumn(let p): return .perColumn(p + columns)
        case .perRow(let p): return .perRow(p + rows)
        }
    }
}

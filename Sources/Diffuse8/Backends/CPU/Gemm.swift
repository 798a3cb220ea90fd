/// Single-precision matrix multiplication on the CPU: a blocked, packed SGEMM in the BLIS style.
///
/// C is cut into column tiles of `tileColumns` and runs of row tiles of `tileRows`; each (column tile,
/// row run) is one task, and workers pull tasks from a shared counter (`TaskCounter`). Within a task,
/// for each `depthBlock` slice of K the worker packs B's slice into NR-wide column slivers (once, reused
/// by the whole row run) and A's slice into MR-tall row slivers, then runs the register-tiled
/// micro-kernel (`GemmMicroKernel`) over every MR × NR block. When several column tiles share A, A is
/// packed once up front instead. Packing (zero-padded at the edges) lets any operand layout —
/// row-major, transposed, strided, or generated on the fly like im2col — feed the same micro-kernel with
/// unit-stride loads. Sums run over K in order within a slice, so results differ from PyTorch's BLAS
/// only by float32 rounding (relative L2 ~1e-7 on the reference tests).
enum Gemm {
    /// Micro-tile height (rows of A per kernel call) and width (columns of B).
    static let mr = GemmMicroKernel.mr
    static let nr = GemmMicroKernel.nr
    /// Depth of one packed slice (keeps an NR-wide B sliver, kc·NR floats, inside L1).
    static let depthBlock = 256
    /// Rows and columns of C per parallel task (the packed A and B slices stay in L2).
    static let tileRows = 16 * mr
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
    static func packedBCount(k: Int, n: Int) -> Int { k * ((n + nr - 1) / nr * nr) }

    /// Packs all of B (K × N, `layout` .transposed or .rowMajor, row stride `ldb`) for `.prepacked`:
    /// K slices of `depthBlock` one after another, each holding every NR-wide column sliver.
    static func packB(k: Int, n: Int, b: UnsafePointer<Float>, ldb: Int, layout: BLayout, into out: UnsafeMutablePointer<Float>) {
        let paddedColumns = (n + nr - 1) / nr * nr
        var p0 = 0
        while p0 < k {
            let kc = min(depthBlock, k - p0)
            switch layout {
            case .transposed: GemmPacking.packBTransposed(b + p0, ldb: ldb, columns: n, depth: kc, into: out + p0 * paddedColumns)
            case .rowMajor: GemmPacking.packBRowMajor(b + p0 * ldb, ldb: ldb, columns: n, depth: kc, into: out + p0 * paddedColumns)
            case .packed, .prepacked: preconditionFailure("Gemm.packB: B must be a plain matrix")
            }
            p0 += kc
        }
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
        guard m > 0, n > 0 else { return }
        if k == 0 {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + biasValue(bias, i, j) } }
            return
        }
        // A task is one column tile × a run of rows: its packed B slice is reused by every row tile of
        // the run. Tasks are sized so there are at least 4 per worker and their count is a multiple of
        // the worker count, so no worker is left with one extra task at the end.
        let workers = parallel ? CPUConfiguration.threadCount : 1
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
        let tasks = rowChunks * columnTiles
        let scratchCount = packedACount + packedBCount
        // A is reused by every column tile: when there are several, pack all of it once up front
        // instead of once per task (e.g. a convolution's weights over 11 column tiles at 64×64).
        let paddedRows = (m + mr - 1) / mr * mr
        let prepackA = columnTiles > 1 && paddedRows * k <= maximumPrepackedA
        let run = { (prepackedA: UnsafeMutablePointer<Float>?) in
            let body = { (task: Int, scratch: UnsafeMutablePointer<Float>) in
                let chunk = task % rowChunks, columnTile = task / rowChunks
                let firstRow = chunk * chunkRows, endRow = min(m, firstRow + chunkRows)
                let j0 = columnTile * tileWidth
                if firstRow < endRow {
                    computeTask(rows: firstRow..<endRow, columns: j0..<min(n, j0 + tileWidth), k: k, a: a, lda: lda,
                                paddedRows: paddedRows,
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
        if prepackA {
            ScratchPool.with(count: paddedRows * k) { packed in
                let slices = (k + depthBlock - 1) / depthBlock
                let rowTiles = (m + tileRows - 1) / tileRows
                let pack = { (item: Int) in
                    let i0 = (item / slices) * tileRows, p0 = (item % slices) * depthBlock
                    let tile = min(tileRows, m - i0), kc = min(depthBlock, k - p0)
                    GemmPacking.packA(a + i0 * lda + p0, lda: lda, rows: tile, depth: kc,
                                      into: packed + prepackedOffset(row: i0, depth: p0, paddedRows: paddedRows, kc: kc))
                }
                if parallel { parallelForDynamic(rowTiles * slices, pack) } else { for i in 0..<(rowTiles * slices) { pack(i) } }
                run(packed)
            }
        } else {
            run(nil)
        }
    }

    /// Largest A (in floats) packed whole up front.
    static let maximumPrepackedA = 8 << 20

    /// Where the slivers of rows from `row` (a multiple of MR) in the K slice at `depth` (depth `kc`)
    /// start in a whole packed A: K slices one after another, each all row slivers (rows padded to MR).
    @inline(__always)
    static func prepackedOffset(row: Int, depth: Int, paddedRows: Int, kc: Int) -> Int {
        depth * paddedRows + row * kc
    }

    static let packedACount = tileRows * depthBlock
    static let packedBCount = tileColumns * depthBlock

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
    @inline(__always)
    static func computeTask(rows: Range<Int>, columns columnRange: Range<Int>, k: Int,
                            a: UnsafePointer<Float>, lda: Int, paddedRows: Int, prepackedA: UnsafeMutablePointer<Float>?,
                            b: UnsafePointer<Float>, ldb: Int, bLayout: BLayout,
                            c: UnsafeMutablePointer<Float>, ldc: Int, bias: Bias, accumulate: Bool,
                            scratch: UnsafeMutablePointer<Float>) {
        let j0 = columnRange.lowerBound, columns = columnRange.count
        var packedB = scratch + packedACount
        var p0 = 0
        while p0 < k {
            let kc = min(depthBlock, k - p0)
            switch bLayout {
            case .prepacked(let whole, let paddedColumns):
                packedB = UnsafeMutablePointer(mutating: whole + p0 * paddedColumns + j0 * kc)
            case .transposed: GemmPacking.packBTransposed(b + j0 * ldb + p0, ldb: ldb, columns: columns, depth: kc, into: packedB)
            case .rowMajor: GemmPacking.packBRowMajor(b + p0 * ldb + j0, ldb: ldb, columns: columns, depth: kc, into: packedB)
            case .packed(let pack): pack(p0, kc, j0, columns, packedB)
            }
            let first = p0 == 0 && !accumulate
            var i0 = rows.lowerBound
            while i0 < rows.upperBound {
                let tile = min(tileRows, rows.upperBound - i0)
                let packedA: UnsafeMutablePointer<Float>
                if let prepackedA {
                    packedA = prepackedA + prepackedOffset(row: i0, depth: p0, paddedRows: paddedRows, kc: kc)
                } else {
                    packedA = scratch
                    GemmPacking.packA(a + i0 * lda + p0, lda: lda, rows: tile, depth: kc, into: packedA)
                }
                macroKernel(rows: tile, columns: columns, depth: kc, packedA: packedA, packedB: packedB,
                            c: c + i0 * ldc + j0, ldc: ldc, bias: first ? bias.offset(rows: i0, columns: j0) : nil)
                i0 += tile
            }
            p0 += kc
        }
    }

    /// C[rows × columns] (+)= packedA · packedB for one K slice. `bias == nil` accumulates into C;
    /// otherwise C is overwritten with the product plus the bias.
    @inline(__always)
    static func macroKernel(rows: Int, columns: Int, depth kc: Int,
                            packedA: UnsafeMutablePointer<Float>, packedB: UnsafeMutablePointer<Float>,
                            c: UnsafeMutablePointer<Float>, ldc: Int, bias: Bias?) {
        let rowSlivers = (rows + mr - 1) / mr, columnSlivers = (columns + nr - 1) / nr
        for js in 0..<columnSlivers {
            let jj = js * nr, nValid = min(nr, columns - jj)
            let bSliver = UnsafePointer(packedB + js * nr * kc)
            for isl in 0..<rowSlivers {
                let ii = isl * mr, mValid = min(mr, rows - ii)
                let initial: GemmMicroKernel.Initial
                switch bias {
                case nil: initial = .accumulate
                case .some(.none): initial = .zero
                case .some(.perColumn(let p)): initial = .columnBias(p + jj)
                case .some(.perRow(let p)): initial = .rowBias(p + ii)
                }
                GemmMicroKernel.run(depth: kc, a: UnsafePointer(packedA + isl * mr * kc), b: bSliver,
                                    c: c + ii * ldc + jj, ldc: ldc, rows: mValid, columns: nValid, initial: initial)
            }
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

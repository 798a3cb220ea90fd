import CDiffuse8Kernels

/// The INT8 product C[m × O] = A[m × K] · Wᵀ on the micro-kernels: A holds activation codes + 128 as bytes, rows
/// padded to a multiple of MR with `lda` = 4 · kGroups bytes; W is packed (`CPUInt8PackedWeight`).
///
/// Tasks are (run of row tiles, weight panel) pairs pulled from a shared counter: the panel (K · NR bytes) stays in
/// L2 while the run's row tiles stream past it. Each INT32 tile goes straight to `epilogue`, which dequantizes
/// and stores it (so the INT32 matrix never exists). The AVX2 variant widens A to INT16 codes once per product
/// (not once per tile and panel: with 10 panels that was a tenth of its time or more).
enum CPUInt8Gemm {
    /// Row tiles per task.
    static let tilesPerTask = 16

    /// - Parameter epilogue: (first row, valid rows, first column, valid columns, MR × NR INT32 tile, row-major).
    static func multiply(a: UnsafePointer<UInt8>, rows m: Int, lda: Int, weight: CPUInt8PackedWeight,
                         kernel: CPUInt8Kernel = .active,
                         epilogue: (_ row: Int, _ rows: Int, _ column: Int, _ columns: Int, _ tile: UnsafePointer<Int32>) -> Void) {
        let mr = CPUInt8Kernel.tileRows, nr = CPUInt8Kernel.tileColumns
        precondition(lda >= weight.kGroups * 4, "CPUInt8Gemm: rows of A are shorter than K")
        let rowTiles = (m + mr - 1) / mr
        guard rowTiles > 0, weight.panels > 0 else { return }
        var runs = (rowTiles + tilesPerTask - 1) / tilesPerTask
        // Enough tasks for every worker (small layers of small models have one or two runs).
        let workers = CPUConfiguration.threadCount
        while runs * weight.panels < 2 * workers && runs < rowTiles { runs += 1 }
        let tilesPerRun = (rowTiles + runs - 1) / runs
        runs = (rowTiles + tilesPerRun - 1) / tilesPerRun
        let tasks = runs * weight.panels
        let kGroups = weight.kGroups
        let active = min(workers, tasks)
        func run(_ wide: UnsafeMutablePointer<Int16>?) {
            func body(_ task: Int, _ tile: UnsafeMutablePointer<Int32>) {
                let run = task % runs, panel = task / runs
                let column = panel * nr, columns = min(nr, weight.outputs - column)
                let b = weight.panel(panel)
                let compensation = UnsafePointer(weight.compensation + column)
                for t in (run * tilesPerRun)..<min(rowTiles, (run + 1) * tilesPerRun) {
                    let row = t * mr
                    if let wide {
                        d8_int8_avx2_tile_widened(wide + row * kGroups * 4, b, kGroups, tile)
                    } else {
                        kernel.tile(a: a + row * lda, lda: lda, panel: b, compensation: compensation, kGroups: kGroups, into: tile)
                    }
                    epilogue(row, min(mr, m - row), column, columns, UnsafePointer(tile))
                }
            }
            let counter = TaskCounter()
            runOnWorkers(active) { _ in
                withUnsafeTemporaryAllocation(of: Int32.self, capacity: mr * nr) { tile in
                    if active <= 1 {
                        for t in 0..<tasks { body(t, tile.baseAddress!) }
                        return
                    }
                    while let t = counter.next(below: tasks) { body(t, tile.baseAddress!) }
                }
            }
        }
        guard kernel == .avx2 else { return run(nil) }
        // A's rows are padded to whole tiles (the caller's contract), so every tile reads MR widened rows.
        withUnsafeTemporaryAllocation(of: Int16.self, capacity: rowTiles * mr * kGroups * 4) { wide in
            let w = wide.baseAddress!
            parallelFor(rowTiles * mr, minChunk: max(1, 16384 / max(kGroups * 4, 1))) { range in
                d8_int8_avx2_widen(a + range.lowerBound * lda, lda, range.count, kGroups, w + range.lowerBound * kGroups * 4)
            }
            run(w)
        }
    }
}

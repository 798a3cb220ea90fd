#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// FP32 3×3 stride-1 padding-1 convolution by Winograd minimal filtering F(4×4, 3×3) (Lavin & Gray, 2016).
///
/// The output is cut into 4×4 tiles; each reads a 6×6 input patch d. With the filter g transformed once per call,
/// U = G g Gᵀ, and the patch V = Bᵀ d B (both 6×6), the tile is Y = Aᵀ (Σ_c U_c ⊙ V_c) A: the channel sum becomes
/// 36 independent matrix products M_ξ[O, tiles] = U_ξ[O, C] · V_ξ[C, tiles] (ξ = the 36 positions of the 6×6
/// domain), run on the packed SGEMM. That is 36 multiply-adds per output channel, input channel and tile against
/// 144 for the direct sum: 4× fewer. The transforms are `SIMD16` code over 16 tiles of one tile row at a time.
///
/// Interpolation points 0, ±1, 1/2, −2 (and ∞): measured in FP32 against a float64 convolution, their relative L2
/// error is ~2e-6 at 320–2560 input channels against ~3e-6 for the common 0, ±1, ±2 (direct FP32 sums: ~3e-7).
///
/// Memory: the transformed filter is 4× the 3×3 filter (SD1.5: 8.3 GB more), so it is not kept: each call transforms
/// it block by block into a bounded temporary (`blockFloats`), as it transforms the input.
/// Used by `CPUKernels.conv2d` only for callers that accept a result that is not the in-order sum of the products
/// (`Conv2dAlgorithm.fastest`: the FP32 `Conv2d` layer) and only where it is faster (`isFaster`).
enum WinogradConvolution {
    typealias V = SIMD16<Float>

    /// What `.fastest` does: by default the environment variable `DIFFUSE8_WINOGRAD` (`on`: wherever the shape
    /// allows, `off`: never) or, without it, the shape rule decides.
    enum Mode: Sendable { case automatic, always, never }
    nonisolated(unsafe) static var mode: Mode = {
        switch EnvironmentSetting.choice("DIFFUSE8_WINOGRAD", of: Switch.self) {
        case .on: return .always
        case .off: return .never
        case nil: return .automatic
        }
    }()

    /// Largest temporary of each kind (transformed filter block, transformed input block, products), in floats.
    nonisolated(unsafe) static var blockFloats = 4 << 20

    /// The convolution by Winograd when `algorithm` asks for it and the shape allows it (3×3, stride 1, padding 1),
    /// else nil. `.fastest` uses it where `runs` says so.
    static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int, algorithm: Conv2dAlgorithm) -> Tensor? {
        switch algorithm {
        case .im2col: return nil
        case .winograd: guard applies(input: x.shape, weight: weight.shape, stride: stride, padding: padding) else { return nil }
        case .fastest: guard runs(input: x.shape, weight: weight.shape, stride: stride, padding: padding) else { return nil }
        }
        return conv2d(x, weight: weight, bias: bias)
    }

    /// Whether the shape is one Winograd F(4×4, 3×3) computes: a non-empty 3×3 convolution, stride 1, padding 1.
    static func applies(input: [Int], weight: [Int], stride: Int, padding: Int) -> Bool {
        input.count == 4 && weight.count == 4 && weight[2] == 3 && weight[3] == 3 && stride == 1 && padding == 1
            && !input.contains(0) && !weight.contains(0)
    }

    /// Whether `CPUKernels.conv2d(…, algorithm: .fastest)` runs Winograd for these shapes (`mode`, else the shape rule),
    /// so a `Conv2d` layer also knows whether it needs its plain weight or its packed one.
    static func runs(input: [Int], weight: [Int], stride: Int, padding: Int) -> Bool {
        guard applies(input: input, weight: weight, stride: stride, padding: padding) else { return false }
        switch mode {
        case .always: return true
        case .never: return false
        case .automatic: return isFaster(batch: input[0], channels: input[1], outputs: weight[0], height: input[2], width: input[3])
        }
    }

    /// Whether Winograd beats the im2col GEMM for this shape; the rule comes from per-shape timings (docs/PERFORMANCE.md).
    static func isFaster(batch n: Int, channels c: Int, outputs o: Int, height h: Int, width w: Int) -> Bool {
        // Below 32 tiles the products are too narrow: the transformed filter (36 floats per filter, written, packed and
        // read on every call) costs as much as the multiplies saved (one thread: 2×1280×16×16 → 1280, 32 tiles, 1.3×
        // faster than im2col; 1×1280×16×16, 16 tiles, 1.0×; 12×12 and 2×8×8, 9 and 8 tiles, 0.5–0.7×). Under 16 input
        // or output channels (conv_in, conv_out) the products are too thin as well.
        let tiles = n * ((h + 3) / 4) * ((w + 3) / 4)
        return tiles >= 32 && c >= 16 && o >= 16
    }

    /// conv2d(x, weight, bias, stride 1, padding 1) for x [N, C, H, W], weight [O, C, 3, 3].
    ///
    /// Blocked so every temporary stays within `blockFloats`: the tiles in blocks of whole tile rows (the products
    /// M[36, O, tiles] of one block); within a block the input channels in chunks (their transformed input
    /// V[36, chunk, tiles]), whose products are accumulated into M; within a chunk the output channels in blocks (their
    /// transformed filter U[36, block, chunk]). Every input channel is transformed once per call, and every filter once
    /// per tile block (once per call when one block holds every tile, as in the SD UNets at batch ≤ 2). Wide tile
    /// blocks get short chunks and long output blocks, narrow ones (small images) the whole input in one chunk.
    static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3], o = weight.shape[0]
        precondition(weight.shape == [o, c, 3, 3], "Winograd conv2d: weight \(weight.shape) is not [\(o), \(c), 3, 3]")
        let tilesY = (h + 3) / 4, tilesX = (w + 3) / 4
        let tileRows = n * tilesY
        let rowsPerBlock = max(1, min(tileRows, blockFloats / (36 * o * tilesX)))
        let maxTiles = rowsPerBlock * tilesX
        let chunk = max(1, min(c, blockFloats / (36 * maxTiles)))
        let outputBlock = max(1, min(o, blockFloats / (36 * chunk)))
        let geometry = Geometry(batch: n, channels: c, outputs: o, height: h, width: w, tilesY: tilesY, tilesX: tilesX)
        return Tensor(shape: [n, o, h, w]) { out in
            x.scalars.withUnsafeBufferPointer { xp in
                weight.scalars.withUnsafeBufferPointer { wp in
                    CPUKernels.withOptionalPointer(bias?.scalars) { bp in
                        // Buffers of one size, whatever the shape, so the scratch pool reuses them instead of growing;
                        // + one vector: the output transform loads whole vectors past the last tile.
                        let size = max(blockFloats, 36 * o * maxTiles, 36 * chunk * maxTiles, 36 * outputBlock * chunk) + V.scalarCount
                        ScratchPool.with(count: size) { filters in
                            ScratchPool.with(count: size) { inputs in
                                ScratchPool.with(count: size) { products in
                                    var firstRow = 0
                                    while firstRow < tileRows {
                                        let rows = firstRow..<min(tileRows, firstRow + rowsPerBlock), tiles = rows.count * tilesX
                                        var c0 = 0
                                        while c0 < c {
                                            let channels = c0..<min(c, c0 + chunk)
                                            geometry.transformInput(xp.baseAddress!, channels: channels, tileRows: rows, into: inputs)
                                            var o0 = 0
                                            while o0 < o {
                                                let outputs = o0..<min(o, o0 + outputBlock)
                                                geometry.transformFilter(wp.baseAddress!, outputs: outputs, channels: channels, into: filters)
                                                if chunk == c {
                                                    // One chunk: finish each block of outputs while its products are in cache.
                                                    let stride = outputs.count * tiles
                                                    multiply(outputs: outputs.count, channels: c, tiles: tiles, filters: filters,
                                                             inputs: inputs, products: products, stride: stride, accumulate: false)
                                                    geometry.transformOutput(products, stride: stride, outputs: outputs, tileRows: rows,
                                                                             bias: bp, into: out.baseAddress!)
                                                } else {
                                                    multiply(outputs: outputs.count, channels: channels.count, tiles: tiles, filters: filters,
                                                             inputs: inputs, products: products + o0 * tiles, stride: o * tiles, accumulate: c0 > 0)
                                                }
                                                o0 = outputs.upperBound
                                            }
                                            c0 = channels.upperBound
                                        }
                                        if chunk < c {
                                            geometry.transformOutput(products, stride: o * tiles, outputs: 0..<o, tileRows: rows, bias: bp,
                                                                     into: out.baseAddress!)
                                        }
                                        firstRow = rows.upperBound
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The 36 products M_ξ[block, tiles] (+)= U_ξ[block, chunk] · V_ξ[chunk, tiles], one whole product per worker;
    /// M_ξ starts `stride` floats after M_(ξ−1).
    static func multiply(outputs: Int, channels: Int, tiles: Int, filters: UnsafeMutablePointer<Float>,
                         inputs: UnsafeMutablePointer<Float>, products: UnsafeMutablePointer<Float>, stride: Int, accumulate: Bool) {
        parallelForDynamic(36) { xi in
            Gemm.multiply(m: outputs, n: tiles, k: channels, a: filters + xi * outputs * channels, lda: channels,
                          b: inputs + xi * channels * tiles, ldb: tiles, bLayout: .rowMajor,
                          c: products + xi * stride, ldc: tiles, accumulate: accumulate, parallel: false)
        }
    }

    /// Sizes of one convolution. Tiles are numbered (image, tile row, tile column) within a block of tile rows.
    struct Geometry: @unchecked Sendable {
        let batch: Int, channels: Int, outputs: Int, height: Int, width: Int, tilesY: Int, tilesX: Int

        /// V_ξ[c − c0, t] = (Bᵀ d B)_ξ for the input channels `chunk` (c0 ..< c0 + count) and every tile of the tile
        /// rows `tileRows` (image · tilesY + ty): 36 matrices [count, tiles], tiles = tileRows.count · tilesX.
        func transformInput(_ x: UnsafePointer<Float>, channels chunk: Range<Int>, tileRows: Range<Int>, into v: UnsafeMutablePointer<Float>) {
            let tiles = tileRows.count * tilesX, count = chunk.count
            // One padded input strip (6 rows from x = −1) and its vertical transform, whole vectors of tiles wide.
            let groups = (tilesX + 15) / 16
            let stripWidth = groups * 64 + 2 + V.scalarCount
            parallelFor(count) { channelRange in
                let strip = UnsafeMutablePointer<Float>.allocate(capacity: 12 * stripWidth)
                defer { strip.deallocate() }
                strip.initialize(repeating: 0, count: 12 * stripWidth)
                let vertical = strip + 6 * stripWidth
                for ci in channelRange {
                    for (r, tileRow) in tileRows.enumerated() {
                        let image = tileRow / tilesY, ty = tileRow % tilesY
                        let plane = x + (image * channels + chunk.lowerBound + ci) * height * width
                        for k in 0..<6 {
                            let iy = ty * 4 - 1 + k, row = strip + k * stripWidth
                            if iy >= 0 && iy < height {
                                (row + 1).update(from: plane + iy * width, count: width)
                            } else {
                                (row + 1).update(repeating: 0, count: width)
                            }
                        }
                        // Bᵀ along y, vectorised along x.
                        var xb = 0
                        while xb < stripWidth - V.scalarCount {
                            let t = WinogradConvolution.inputRow(
                                load(strip + xb), load(strip + stripWidth + xb), load(strip + 2 * stripWidth + xb),
                                load(strip + 3 * stripWidth + xb), load(strip + 4 * stripWidth + xb), load(strip + 5 * stripWidth + xb))
                            store(t.0, vertical + xb); store(t.1, vertical + stripWidth + xb); store(t.2, vertical + 2 * stripWidth + xb)
                            store(t.3, vertical + 3 * stripWidth + xb); store(t.4, vertical + 4 * stripWidth + xb)
                            store(t.5, vertical + 5 * stripWidth + xb)
                            xb += V.scalarCount
                        }
                        // Bᵀ along x, vectorised over 16 tiles (every fourth column).
                        for g in 0..<groups {
                            let tx0 = g * 16, lanes = min(16, tilesX - tx0)
                            let tile = r * tilesX + tx0
                            for k in 0..<6 {
                                let p = vertical + k * stripWidth + tx0 * 4
                                let e = WinogradConvolution.inputRow(gather4(p), gather4(p + 1), gather4(p + 2),
                                                                     gather4(p + 3), gather4(p + 4), gather4(p + 5))
                                let base = v + (k * 6 * count + ci) * tiles + tile, step = count * tiles
                                put(e.0, base, lanes); put(e.1, base + step, lanes); put(e.2, base + 2 * step, lanes)
                                put(e.3, base + 3 * step, lanes); put(e.4, base + 4 * step, lanes); put(e.5, base + 5 * step, lanes)
                            }
                        }
                    }
                }
            }
        }

        /// U_ξ[o − o0, c − c0] = (G g Gᵀ)_ξ for the output channels `block` (o0 ..< o0 + block.count) and the input
        /// channels `chunk` (c0 ..< c0 + count): 36 matrices [block.count, count].
        func transformFilter(_ weight: UnsafePointer<Float>, outputs block: Range<Int>, channels chunk: Range<Int>,
                             into u: UnsafeMutablePointer<Float>) {
            let count = chunk.count, rows = block.count, step = rows * count
            parallelFor(rows) { range in
                for oi in range {
                    let o = block.lowerBound + oi
                    var ci = 0
                    while ci < count {
                        let lanes = min(16, count - ci)
                        let g = weight + (o * channels + chunk.lowerBound + ci) * 9
                        // G along ky for each kx, then along kx.
                        let col0 = WinogradConvolution.weightRow(gather9(g, 0, lanes), gather9(g, 3, lanes), gather9(g, 6, lanes))
                        let col1 = WinogradConvolution.weightRow(gather9(g, 1, lanes), gather9(g, 4, lanes), gather9(g, 7, lanes))
                        let col2 = WinogradConvolution.weightRow(gather9(g, 2, lanes), gather9(g, 5, lanes), gather9(g, 8, lanes))
                        func row(_ k: Int, _ a: V, _ b: V, _ c: V) {
                            let r = WinogradConvolution.weightRow(a, b, c)
                            let base = u + (k * 6 * rows + oi) * count + ci
                            put(r.0, base, lanes); put(r.1, base + step, lanes); put(r.2, base + 2 * step, lanes)
                            put(r.3, base + 3 * step, lanes); put(r.4, base + 4 * step, lanes); put(r.5, base + 5 * step, lanes)
                        }
                        row(0, col0.0, col1.0, col2.0); row(1, col0.1, col1.1, col2.1); row(2, col0.2, col1.2, col2.2)
                        row(3, col0.3, col1.3, col2.3); row(4, col0.4, col1.4, col2.4); row(5, col0.5, col1.5, col2.5)
                        ci += 16
                    }
                }
            }
        }

        /// out[image, o, 4ty + i, 4tx + j] = (Aᵀ M A)[i, j] + bias[o] for the output channels `range` and the tiles
        /// of `tileRows`; M holds 36 matrices [range.count, tiles], `stride` floats apart.
        func transformOutput(_ m: UnsafeMutablePointer<Float>, stride step: Int, outputs range: Range<Int>, tileRows: Range<Int>,
                             bias: UnsafePointer<Float>?, into out: UnsafeMutablePointer<Float>) {
            let block = range.count, tiles = tileRows.count * tilesX
            let groups = (tilesX + 15) / 16
            parallelFor(block * tileRows.count) { items in
                // One 4-row strip of 16 tiles, written out row by row.
                let strip = UnsafeMutablePointer<Float>.allocate(capacity: 4 * 64)
                defer { strip.deallocate() }
                for item in items {
                    let oi = item / tileRows.count, r = item % tileRows.count
                    let tileRow = tileRows.lowerBound + r
                    let image = tileRow / tilesY, ty = tileRow % tilesY
                    let o = range.lowerBound + oi
                    let shift = V(repeating: bias?[o] ?? 0)
                    let plane = out + (image * outputs + o) * height * width
                    for g in 0..<groups {
                        let tx0 = g * 16
                        let p = m + oi * tiles + r * tilesX + tx0
                        // Aᵀ along the 6 columns of the domain, then along the rows.
                        func column(_ l: Int) -> (V, V, V, V) {
                            WinogradConvolution.outputRow(load(p + l * step), load(p + (6 + l) * step), load(p + (12 + l) * step),
                                                          load(p + (18 + l) * step), load(p + (24 + l) * step), load(p + (30 + l) * step))
                        }
                        let c0 = column(0), c1 = column(1), c2 = column(2), c3 = column(3), c4 = column(4), c5 = column(5)
                        func emit(_ i: Int, _ a: V, _ b: V, _ c: V, _ d: V, _ e: V, _ f: V) {
                            let y = WinogradConvolution.outputRow(a, b, c, d, e, f)
                            scatter4(y.0 + shift, y.1 + shift, y.2 + shift, y.3 + shift, into: strip + i * 64)
                        }
                        emit(0, c0.0, c1.0, c2.0, c3.0, c4.0, c5.0); emit(1, c0.1, c1.1, c2.1, c3.1, c4.1, c5.1)
                        emit(2, c0.2, c1.2, c2.2, c3.2, c4.2, c5.2); emit(3, c0.3, c1.3, c2.3, c3.3, c4.3, c5.3)
                        let x0 = tx0 * 4, columns = min(64, width - x0)
                        for i in 0..<min(4, height - ty * 4) {
                            (plane + (ty * 4 + i) * width + x0).update(from: strip + i * 64, count: columns)
                        }
                    }
                }
            }
        }
    }

    // MARK: Vector helpers

    @inline(__always) static func load(_ p: UnsafeMutablePointer<Float>) -> V { VectorMath.load(p) }
    @inline(__always) static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { VectorMath.store(v, p) }

    /// p[0], p[4], …, p[60].
    @inline(__always)
    static func gather4(_ p: UnsafeMutablePointer<Float>) -> V {
        var v = V()
        for lane in 0..<16 { v[lane] = p[4 * lane] }
        return v
    }

    /// Tap `tap` of 16 consecutive 3×3 filters (9 floats apart); lanes from `count` on are 0.
    @inline(__always)
    static func gather9(_ p: UnsafePointer<Float>, _ tap: Int, _ count: Int) -> V {
        var v = V()
        if count == 16 {
            for lane in 0..<16 { v[lane] = p[9 * lane + tap] }
        } else {
            for lane in 0..<count { v[lane] = p[9 * lane + tap] }
        }
        return v
    }

    /// Stores the first `count` lanes.
    @inline(__always)
    static func put(_ v: V, _ p: UnsafeMutablePointer<Float>, _ count: Int) {
        if count == 16 { store(v, p); return }
        for lane in 0..<count { p[lane] = v[lane] }
    }

    /// Interleaves four vectors: p[4·lane + j] = v_j[lane].
    @inline(__always)
    static func scatter4(_ a: V, _ b: V, _ c: V, _ d: V, into p: UnsafeMutablePointer<Float>) {
        for lane in 0..<16 {
            p[4 * lane] = a[lane]; p[4 * lane + 1] = b[lane]; p[4 * lane + 2] = c[lane]; p[4 * lane + 3] = d[lane]
        }
    }

    // MARK: 1-D transforms (points 0, 1, −1, 1/2, −2, ∞)

    @inline(__always)
    static func fma(_ acc: V, _ v: V, _ s: Float) -> V { VectorMath.fma(acc, v, V(repeating: s)) }

    /// Bᵀ·(v0 … v5). Bᵀ = [1, −3/2, −2, 3/2, 1, 0; 0, −1, 1/2, 5/2, 1, 0; 0, 1, −5/2, 1/2, 1, 0;
    /// 0, −2, −1, 2, 1, 0; 0, 1/2, −1, −1/2, 1, 0; 0, 1, −3/2, −2, 3/2, 1].
    @inline(__always)
    static func inputRow(_ v0: V, _ v1: V, _ v2: V, _ v3: V, _ v4: V, _ v5: V) -> (V, V, V, V, V, V) {
        let r0 = fma(fma(fma(v0 + v4, v1, -1.5), v2, -2), v3, 1.5)
        let r1 = fma(fma(v4 - v1, v2, 0.5), v3, 2.5)
        let r2 = fma(fma(v1 + v4, v2, -2.5), v3, 0.5)
        let r3 = fma(fma(v4 - v2, v1, -2), v3, 2)
        let r4 = fma(fma(v4 - v2, v1, 0.5), v3, -0.5)
        let r5 = fma(fma(fma(v1 + v5, v2, -1.5), v3, -2), v4, 1.5)
        return (r0, r1, r2, r3, r4, r5)
    }

    /// Aᵀ·(v0 … v5). Aᵀ = [1, 1, 1, 1, 1, 0; 0, 1, −1, 1/2, −2, 0; 0, 1, 1, 1/4, 4, 0; 0, 1, −1, 1/8, −8, 1].
    @inline(__always)
    static func outputRow(_ v0: V, _ v1: V, _ v2: V, _ v3: V, _ v4: V, _ v5: V) -> (V, V, V, V) {
        let r0 = v0 + v1 + v2 + v3 + v4
        let r1 = fma(fma(v1 - v2, v3, 0.5), v4, -2)
        let r2 = fma(fma(v1 + v2, v3, 0.25), v4, 4)
        let r3 = fma(fma(v1 - v2 + v5, v3, 0.125), v4, -8)
        return (r0, r1, r2, r3)
    }

    /// G·(v0, v1, v2). G = [1, 0, 0; 1/3, 1/3, 1/3; −1/3, 1/3, −1/3; −16/15, −8/15, −4/15; 1/15, −2/15, 4/15; 0, 0, 1].
    @inline(__always)
    static func weightRow(_ v0: V, _ v1: V, _ v2: V) -> (V, V, V, V, V, V) {
        let third: Float = 1.0 / 3.0, fifteenth: Float = 1.0 / 15.0, fourFifteenths: Float = 4.0 / 15.0
        let r1 = (v0 + v1 + v2) * third
        let r2 = (v1 - v0 - v2) * third
        let r3 = fma(fma(v2, v1, 2), v0, 4) * -fourFifteenths
        let r4 = fma(fma(v0, v1, -2), v2, 4) * fifteenth
        return (v0, r1, r2, r3, r4, v2)
    }
}

/// How `CPUKernels.conv2d` may compute a convolution.
public enum Conv2dAlgorithm: Sendable {
    /// The im2col GEMM: each output is the in-order FP32 sum of its products (the simulation's exact integer sums
    /// rely on it).
    case im2col
    /// Winograd F(4×4, 3×3) for every 3×3 stride-1 padding-1 convolution, im2col for the rest.
    case winograd
    /// The fastest kernel for the shape: Winograd F(4×4, 3×3) where `WinogradConvolution` applies, else im2col.
    case fastest
}

import CDiffuse8Kernels

/// An INT8 3×3 stride-1 padding-1 convolution on the AVX2 kernel by Winograd F(2×2, 3×3) in integers
/// (`Int8Kernels.h`): per 2×2 output tile and channel pair 16 INT16 products instead of 36 INT8 ones, with the same
/// exact INT32 sums as the direct convolution (so the same outputs, bit for bit). `vpmaddwd` multiplies INT16 anyway,
/// so the transformed operands (|V| ≤ 512, |U| ≤ 1152) cost the AVX2 kernel nothing per product; the VNNI and
/// dot-product kernels multiply bytes and keep the direct convolution.
///
/// Nothing is kept: the transformed filter U (3.6× the codes) is made per call, one panel of 32 outputs at a time,
/// from the weight as packed for the direct kernels (a few additions per code), and the input is transformed per
/// block of tiles (`blockBytes` of V and products at most), so memory stays that of the direct convolution.
enum CPUInt8WinogradConvolution {
    /// Largest channel count with exact INT32 sums (|4 Σ| ≤ 4 · 9 · C · 128² < 2³¹).
    static let maximumChannels = 3640

    /// Bytes of transformed input and products per block of tiles.
    nonisolated(unsafe) static var blockBytes = 4 << 20

    /// Fewest input channels where it is faster than the direct convolution (alone, 2 × 16 × 16 images, 64 outputs:
    /// 0.44× at 4 channels, 0.89× at 16, 1.33× at 32, 1.8–2.2× from 64).
    static let minimumChannels = 32

    /// Whether the convolution is one this computes: 3×3, stride 1, padding 1, channels a multiple of 4 (a packed
    /// k group then holds one tap of 4 channels), enough to pay for the transforms and few enough for exact sums.
    /// `DIFFUSE8_WINOGRAD=off` turns it off, as it does the FP32 Winograd convolution.
    static func applies(weightShape shape: [Int], stride: Int, padding: Int) -> Bool {
        shape.count == 4 && shape[2] == 3 && shape[3] == 3 && stride == 1 && padding == 1 && shape[1] % 4 == 0
            && shape[1] >= minimumChannels && shape[1] <= maximumChannels && WinogradConvolution.mode != .never
    }

    /// y [N, O, H, W] = Float(Σ) · (imageScales[n] · s_w[o]) + bias[o] (the direct path's epilogue formula) from the
    /// channels-last codes + 128 [N, H, W, C]; `weight` is the layer's channels-last 3×3 weight, packed.
    static func run(_ weight: CPUInt8PackedWeight, codes: UnsafePointer<UInt8>, images n: Int, height h: Int, width w: Int,
                    imageScales: UnsafePointer<Float>, bias: UnsafePointer<Float>?, into y: UnsafeMutablePointer<Float>) {
        let mr = CPUInt8Kernel.tileRows, nr = CPUInt8Kernel.tileColumns
        let channels = weight.depth / 9, groups = channels / 4, panels = weight.panels
        precondition(weight.depth == 9 * channels && channels % 4 == 0, "CPUInt8WinogradConvolution: not a 3×3 weight of 4k channels")
        let tileCount = n * ((h + 1) / 2) * ((w + 1) / 2)
        let ldv = channels, ldm = panels * nr
        let bytesPerTile = 16 * (ldv * 2 + ldm * 4)
        let blockRows = max(mr, min((tileCount + mr - 1) / mr * mr, blockBytes / bytesPerTile / mr * mr))
        let zeros = [UInt8](repeating: 128, count: max(channels, 1))
        let v = UnsafeMutablePointer<Int16>.allocate(capacity: 16 * blockRows * ldv)
        let m = UnsafeMutablePointer<Int32>.allocate(capacity: 16 * blockRows * ldm)
        // U's positions 64 values further apart than their size: no 4 KiB stride between them.
        let ldu = groups * nr * 4 + 64
        let u = UnsafeMutablePointer<Int16>.allocate(capacity: 16 * ldu)
        defer { v.deallocate(); m.deallocate(); u.deallocate() }
        zeros.withUnsafeBufferPointer { zp in
            var base = 0
            while base < tileCount {
                let rows = min(blockRows, (tileCount - base + mr - 1) / mr * mr), valid = min(rows, tileCount - base)
                parallelFor(rows, minChunk: 16) { range in
                    d8_int8_winograd_input(codes, h, w, channels, base, base + range.lowerBound, range.count, tileCount,
                                           zp.baseAddress!, v, rows, ldv)
                }
                // Panel by panel: its U (16 · C · 32 values) made once, then the 16 products of every row tile.
                let rowTiles = rows / mr
                let runs = max(1, min(rowTiles, (2 * CPUConfiguration.threadCount + 15) / 16))
                let tilesPerRun = (rowTiles + runs - 1) / runs
                for panel in 0..<panels {
                    d8_int8_winograd_filter(weight.panel(panel), channels, u, ldu)
                    parallelForDynamic(16 * runs) { task in
                        let run = task % runs, position = task / runs
                        let first = run * tilesPerRun, count = min(rowTiles, first + tilesPerRun) - first
                        guard count > 0 else { return }
                        d8_int8_winograd_multiply(v, rows, valid, ldv, u, ldu, groups, position, first, count, m + panel * nr, ldm)
                    }
                }
                parallelFor(valid, minChunk: 16) { range in
                    d8_int8_winograd_output(m, rows, ldm, base, base + range.lowerBound, range.count, tileCount, h, w,
                                            weight.outputs, imageScales, UnsafePointer(weight.scales), bias, y)
                }
                base += rows
            }
        }
    }
}

import CDiffuse8Kernels

/// An INT8 3×3 stride-1 padding-1 convolution on the AVX2 kernel by Winograd F(2×2, 3×3) in integers
/// (`Int8Kernels.h`): per 2×2 output tile and channel pair 16 INT16 products instead of 36 INT8 ones, with the same
/// exact INT32 sums as the direct convolution (so the same outputs, bit for bit). `vpmaddwd` multiplies INT16 anyway,
/// so the transformed operands (|V| ≤ 512, |U| ≤ 1152) cost the AVX2 kernel nothing per product; the VNNI and
/// dot-product kernels multiply bytes and keep the direct convolution.
///
/// The transformed filter U (16 INT16 values per output and input channel, 3.6× the codes) is made on the layer's
/// first AVX2 convolution, not at load. The input is transformed per block of tiles (`blockBytes` of V and products
/// at most), so the temporaries stay bounded at any image size.
final class CPUInt8WinogradFilter: @unchecked Sendable {
    let outputs: Int
    let channels: Int
    /// Channels / 4, rounded up.
    let kGroups: Int
    let panels: Int
    let values: UnsafeMutablePointer<Int16>

    /// Largest channel count with exact INT32 sums (|4 Σ| ≤ 4 · 9 · C · 128² < 2³¹).
    static let maximumChannels = 3640

    /// Bytes of transformed input and products per block of tiles.
    nonisolated(unsafe) static var blockBytes = 4 << 20

    /// Whether the convolution is one this computes: 3×3, stride 1, padding 1, few enough channels for exact sums.
    /// `DIFFUSE8_WINOGRAD=off` turns it off, as it does the FP32 Winograd convolution.
    static func applies(weightShape shape: [Int], stride: Int, padding: Int) -> Bool {
        shape.count == 4 && shape[2] == 3 && shape[3] == 3 && stride == 1 && padding == 1 && shape[1] <= maximumChannels
            && WinogradConvolution.mode != .never
    }

    /// U of an INT8 weight [O, C, 3, 3].
    init(_ weight: QuantizedWeight) {
        precondition(weight.format == .int8 && weight.shape.count == 4 && weight.shape[2] == 3 && weight.shape[3] == 3,
                     "CPUInt8WinogradFilter transforms INT8 3×3 filters")
        outputs = weight.shape[0]
        channels = weight.shape[1]
        kGroups = (channels + 3) / 4
        panels = (outputs + CPUInt8Kernel.tileColumns - 1) / CPUInt8Kernel.tileColumns
        let count = 16 * panels * kGroups * CPUInt8Kernel.tileColumns * 4
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count * 2, 64), alignment: 64)
        values = raw.bindMemory(to: Int16.self, capacity: max(count, 32))
        weight.codes.withUnsafeBufferPointer { codes in
            codes.withMemoryRebound(to: Int8.self) { d8_int8_winograd_filter($0.baseAddress!, outputs, channels, kGroups, values) }
        }
    }

    deinit { UnsafeMutableRawPointer(values).deallocate() }

    /// y [N, O, H, W] = Float(Σ) · (imageScales[n] · weightScales[o]) + bias[o] from the channels-last codes + 128
    /// [N, H, W, C] (the direct path's epilogue formula).
    func run(codes: UnsafePointer<UInt8>, images n: Int, height h: Int, width w: Int, imageScales: UnsafePointer<Float>,
             weightScales: UnsafePointer<Float>, bias: UnsafePointer<Float>?, into y: UnsafeMutablePointer<Float>) {
        let mr = CPUInt8Kernel.tileRows, nr = CPUInt8Kernel.tileColumns
        let tileCount = n * ((h + 1) / 2) * ((w + 1) / 2)
        let ldv = kGroups * 4, ldm = panels * nr
        let bytesPerTile = 16 * (ldv * 2 + ldm * 4)
        let blockRows = max(mr, min((tileCount + mr - 1) / mr * mr, Self.blockBytes / bytesPerTile / mr * mr))
        let zeros = [UInt8](repeating: 128, count: max(channels, 1))
        let v = UnsafeMutablePointer<Int16>.allocate(capacity: 16 * blockRows * ldv)
        let m = UnsafeMutablePointer<Int32>.allocate(capacity: 16 * blockRows * ldm)
        defer { v.deallocate(); m.deallocate() }
        zeros.withUnsafeBufferPointer { zp in
            var base = 0
            while base < tileCount {
                let rows = min(blockRows, (tileCount - base + mr - 1) / mr * mr)
                parallelFor(rows, minChunk: 16) { range in
                    d8_int8_winograd_input(codes, h, w, channels, base, base + range.lowerBound, range.count, tileCount,
                                           zp.baseAddress!, v, rows, ldv)
                }
                // Tasks: (position, panel, run of row tiles); the run's U panel stays in cache while its tiles pass.
                let rowTiles = rows / mr
                let runs = max(1, min(rowTiles, (2 * CPUConfiguration.threadCount + 16 * panels - 1) / (16 * panels)))
                let tilesPerRun = (rowTiles + runs - 1) / runs
                parallelForDynamic(16 * panels * runs) { task in
                    let run = task % runs, panel = (task / runs) % panels, position = task / (runs * panels)
                    let first = run * tilesPerRun, count = min(rowTiles, first + tilesPerRun) - first
                    guard count > 0 else { return }
                    d8_int8_winograd_multiply(v, rows, min(rows, tileCount - base), ldv, values, panels, kGroups, position, panel, first, count, m, ldm)
                }
                parallelFor(min(rows, tileCount - base), minChunk: 16) { range in
                    d8_int8_winograd_output(m, rows, ldm, base, base + range.lowerBound, range.count, tileCount, h, w, outputs,
                                            imageScales, weightScales, bias, y)
                }
                base += rows
            }
        }
    }
}

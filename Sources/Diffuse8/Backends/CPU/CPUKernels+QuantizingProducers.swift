/// Producers that also write the INT8 input of the real INT8 layer reading their result: LayerNorm and GEGLU for a
/// Linear (rows of codes in the GEMM's A layout, static or per-token scale), GroupNorm(+SiLU) for a convolution
/// (channels-last codes, static scale). Each computes its FP32 result exactly as the plain kernel does (the same row or
/// group function), then quantizes it while it is still in cache with the reader's own function
/// (`CPUInt8LayerHook.quantizeRow`, `encode`), so the codes are bit for bit those of the reader's separate pass. The
/// result carries them (`Tensor.quantizedInput`) along with its FP32 values.
extension CPUKernels {
    /// `layerNorm(x, …)` with the codes of `reader`'s input attached.
    static func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, epsilon: Float, quantizingFor reader: CPUInt8LayerHook) -> Tensor {
        let d = x.shape.last!
        return weight.scalars.withUnsafeBufferPointer { wp in
            bias.scalars.withUnsafeBufferPointer { bp in
                let w = wp.baseAddress!, b = bp.baseAddress!
                return quantizingRows(of: x, width: d, outputShape: x.shape, for: reader) { xp, out, r in
                    layerNormRow(xp + r * d, out + r * d, count: d, weight: w, bias: b, epsilon: epsilon)
                }
            }
        }
    }

    /// `geglu(x)` with the codes of `reader`'s input attached.
    static func geglu(_ x: Tensor, quantizingFor reader: CPUInt8LayerHook) -> Tensor {
        let d2 = x.shape.last!, d = d2 / 2
        return quantizingRows(of: x, width: d, outputShape: shape(of: x, lastDimension: d), for: reader) { xp, out, r in
            gegluRow(xp + r * d2, out + r * d, count: d)
        }
    }

    /// A row-wise producer: per row, `row(x, out, r)` writes output row r (width `width`), then the row is quantized
    /// into the reader's A operand. Rows are split over the threads as `layerNorm`/`geglu` split them.
    private static func quantizingRows(of x: Tensor, width k: Int, outputShape: [Int], for reader: CPUInt8LayerHook,
                                       _ row: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> Tensor {
        let m = outputShape.reduce(1, *) / max(k, 1)
        let layout = reader.rowLayout(rows: m)
        guard case let .rows(width, lda, _) = layout, width == k else {
            preconditionFailure("\(reader.layer.name): producer rows of \(k) values for a layer of depth \(reader.weight.depth)")
        }
        reader.checkSmoothing()
        let quantization = reader.inputQuantization
        let mr = CPUInt8Kernel.tileRows
        let paddedRows = (m + mr - 1) / mr * mr
        var scales = [Float](repeating: 1, count: m)
        var codes: [UInt8] = []
        var y = Tensor(shape: outputShape) { out in
            codes = [UInt8](unsafeUninitializedCapacity: max(1, paddedRows * lda)) { a, initialized in
                x.scalars.withUnsafeBufferPointer { xp in
                    scales.withUnsafeMutableBufferPointer { sp in
                        let source = xp.baseAddress!, dst = out.baseAddress!, a = a.baseAddress!, rowScales = sp.baseAddress!
                        quantization.withSmoothing { smoothing in
                            parallelFor(m, minChunk: 16) { range in
                                withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, k)) { scratch in
                                    for r in range {
                                        row(source, dst, r)
                                        rowScales[r] = CPUInt8LayerHook.quantizeRow(dst + r * k, width: k, scale: quantization.scale,
                                                                                    smoothing: smoothing, scratch: scratch.baseAddress!,
                                                                                    into: a + r * lda, lda: lda)
                                    }
                                }
                            }
                        }
                    }
                }
                a.baseAddress!.advanced(by: m * lda).initialize(repeating: 128, count: max(1, paddedRows * lda) - m * lda)
                initialized = max(1, paddedRows * lda)
            }
        }
        y.quantizedInput = CPUQuantizedInput(quantization: quantization, layout: layout, codes: codes, scales: scales)
        return y
    }

    /// `groupNorm(x, …)` (NCHW) with the channels-last codes of `reader`'s input attached; `reader` has a static
    /// input scale (a dynamic one needs the whole image's amax first: that stays the reader's own pass).
    static func groupNorm(_ x: Tensor, groups: Int, weight: Tensor, bias: Tensor, epsilon: Float, fusedSiLU: Bool,
                          quantizingFor reader: CPUInt8LayerHook) -> Tensor {
        let quantization = reader.inputQuantization
        guard let scale = quantization.scale else { preconditionFailure("\(reader.layer.name): producer codes need a static input scale") }
        precondition(x.shape.count == 4, "groupNorm: producer codes for a convolution need NCHW input, got \(x.shape)")
        let n = x.shape[0], c = x.shape[1]
        let spatial = x.count / max(n * c, 1), imageSize = c * spatial
        let perGroup = c / groups
        precondition(c % groups == 0, "groupNorm: \(c) channels do not split into \(groups) groups")
        var codes: [UInt8] = []
        var y = Tensor(shape: x.shape) { out in
            codes = [UInt8](unsafeUninitializedCapacity: max(1, x.count)) { q, initialized in
                // The reader's conversion (`quantizeChannelsLast`): each channel plane encoded, then the planes turned
                // channels-last.
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(1, x.count)) { planes in
                    let planes = planes.baseAddress!
                    x.scalars.withUnsafeBufferPointer { xp in
                        weight.scalars.withUnsafeBufferPointer { wp in
                            bias.scalars.withUnsafeBufferPointer { bp in
                                parallelForDynamic(n * groups) { ng in
                                    let image = planes + (ng / groups) * imageSize
                                    groupNormGroup(ng, xp.baseAddress!, out.baseAddress!, groups: groups, perGroup: perGroup,
                                                   spatial: spatial, weight: wp.baseAddress!, bias: bp.baseAddress!,
                                                   epsilon: epsilon, fusedSiLU: fusedSiLU) { channel, values in
                                        CPUInt8LayerHook.encode(UnsafePointer(values), count: spatial, scale: scale, into: image + channel * spatial)
                                    }
                                }
                            }
                        }
                    }
                    CPUInt8LayerHook.channelsLast(planes: planes, images: n, channels: c, spatial: spatial, into: q.baseAddress!)
                }
                initialized = max(1, x.count)
            }
        }
        y.quantizedInput = CPUQuantizedInput(quantization: quantization, layout: .channelsLast(shape: x.shape), codes: codes,
                                             scales: [Float](repeating: scale, count: n))
        return y
    }
}

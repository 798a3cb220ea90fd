extension CUDAKernels {
    /// The input codes of whatever reads an 8-bit GEMM's output: code(y[·, j] · s[j] / scale) in `format`, as the
    /// quantize pass makes them. The wgmma GEGLU writes an FF output layer's (`CUDAEightBitLinear.readerCodes`: its
    /// SmoothQuant factors and input scale); level 4's stacked Q/K/V write cuDNN's FP8 attention's
    /// (`eightBitLinear(readerCodes:)`: E4M3, s = 448 / amax of Q, K or V per column, scale 1). Either saves a pass.
    package struct ReaderCodes {
        /// The reader's 8-bit format.
        let format: QuantizedFormat
        /// The factors s over y's columns (FP32 [n]), nil for ones.
        let smoothing: CUDATensor?
        /// The reader's input scale.
        let scale: Float
        /// (s, or ones, then scale): FP32 [n + 1], the operand of the wgmma GEMM that writes the codes in its epilogue.
        let operands: CUDATensor

        /// The codes' element type.
        var codeType: CUDADataType { format == .int8 ? .int8 : .float8e4m3 }

        /// Codes of `format` for y's `factors` (none: ones) and `scale`, their operands uploaded once; `factorsOnDevice`:
        /// the same factors already uploaded (a layer's SmoothQuant vector), used instead of a second copy.
        package init(_ kernels: CUDAKernels, format: QuantizedFormat, factors: [Float]?, columns: Int, scale: Float,
                     factorsOnDevice: CUDATensor? = nil) throws {
            guard scale > 0, scale.isFinite, factors.map({ $0.count == columns }) ?? true else {
                throw CUDAError.invalidArgument("reader codes: scale \(scale), \(factors?.count ?? columns) factors for \(columns) columns")
            }
            self.format = format
            self.scale = scale
            smoothing = try factorsOnDevice ?? factors.map { try kernels.context.upload(Tensor(shape: [columns], scalars: $0), dtype: .float32) }
            operands = try kernels.context.upload(Tensor(shape: [columns + 1], scalars: (factors ?? [Float](repeating: 1, count: columns)) + [scale]),
                                                  dtype: .float32)
        }
    }

    /// y as the input codes `reader` describes (the quantize pass), new or `out`.
    func quantize(_ y: CUDATensor, as reader: ReaderCodes, into out: CUDATensor? = nil) throws -> CUDATensor {
        try quantize(y, format: reader.format, scale: reader.scale, smoothing: reader.smoothing, into: out)
    }
}

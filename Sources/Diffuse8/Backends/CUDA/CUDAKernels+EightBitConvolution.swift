/// Real 8-bit convolutions: the NCHW input quantized to channels-last codes with the layer's calibrated scale (the
/// simulation's rounding), cuDNN's 8-bit convolution on the stored codes, and α[o] and the bias applied to the sums
/// in FP32 (inside cuDNN's kernel, or in ours), then back to NCHW. Like the 8-bit GEMMs, the only differences from
/// the simulation are the accumulation order and the 16-bit output rounding.
extension CUDAKernels {
    /// y = conv(x) of a quantized layer, by the path measured fastest for x's shape (see `CUDAEightBitConvolution`).
    package func eightBitConvolution(_ x: CUDATensor, _ w: CUDAEightBitConvolution) throws -> CUDATensor {
        try requireHalf(x, op: "eightBitConvolution")
        guard x.shape.count == 4, x.shape[1] == w.inChannels else {
            throw CUDAError.invalidArgument("convolution \(w.name): input \(x.shape) for \(w.inChannels) input channels")
        }
        let capturing = context.allocator.isCapturing
        if let known = w.paths[x.shape] {
            w.lastPath = known
            return try run(known, x, w)
        }
        var y: CUDATensor?
        // Runs `path` for this call and keeps it for this layer and shape (an 8-bit path with the form of the plan
        // that ran, timed on first use of its shape).
        func runPath(_ path: CUDAEightBitConvolution.Path) throws {
            var path = path
            if case .eightBit = path { path = .eightBit(try eightBitPlan(x, w, timing: !capturing).form) }
            y = try run(path, x, w)
            w.paths[x.shape] = path
            w.lastPath = path
        }
        // The 8-bit plan where cuDNN has one for the shape, else 16 bit.
        func planned() -> CUDAEightBitConvolution.Path {
            do {
                return .eightBit(try eightBitPlan(x, w, timing: !capturing).form)
            } catch {
                return .sixteenBit("no cuDNN 8-bit plan: \(error)")
            }
        }
        if w.choosesFastestPath {
            // Shared by every layer of this geometry (`CUDATuningTable`); on first use the 8-bit path is timed
            // against the 16-bit one, and 8 bit is kept only where it is the faster path for this shape.
            try context.tuning.decide(Self.eightBitConvolutionTuningKey(eightBitShape(x, w)), encode: \.tuningCode,
                                      decode: CUDAEightBitConvolution.Path.init(tuningCode:), run: runPath) {
                var path = planned()
                if case .eightBit = path, !capturing {
                    let eightBit = try CUDABenchmark.time(context, warmup: 1, repeats: 5) { _ = try run(path, x, w) }
                    let sixteen = CUDAEightBitConvolution.Path.sixteenBit("")
                    let sixteenBit = try CUDABenchmark.time(context, warmup: 1, repeats: 5) { _ = try run(sixteen, x, w) }
                    if sixteenBit < eightBit {
                        path = .sixteenBit(String(format: "16 bit measured faster (%.1f vs %.1f µs)", sixteenBit * 1000, eightBit * 1000))
                    }
                }
                return .init(path, timed: !capturing, ran: false)
            }
        } else {
            // The 8-bit plan wherever there is one (checks of the 8-bit path itself): a choice of this layer only.
            try runPath(planned())
        }
        if !capturing { w.releaseSixteenBitIfUnused() }
        guard let y else { throw CUDAError.invalidArgument("convolution \(w.name): no path ran") }
        return y
    }

    /// The tuning key of an 8-bit convolution's path choice: its input shape and geometry, format, bias and
    /// output type (the same as its cuDNN graph's).
    static func eightBitConvolutionTuningKey(_ shape: CUDNNEightBitGraphs.Shape) -> String {
        "8bit-conv-path " + CUDNNEightBitGraphs.tuningKey(shape).split(separator: " ").dropFirst().joined(separator: " ")
    }

    private func eightBitPlan(_ x: CUDATensor, _ w: CUDAEightBitConvolution, timing: Bool) throws -> CUDNNEightBitGraphs.Plan {
        let cudnn = try eightBitGraphs()
        return try cudnn.plan(eightBitShape(x, w), timing: timing) { plan in _ = try runEightBit(plan, x, w) }
    }

    private func eightBitShape(_ x: CUDATensor, _ w: CUDAEightBitConvolution) -> CUDNNEightBitGraphs.Shape {
        CUDNNEightBitGraphs.Shape(n: x.shape[0], c: x.shape[1], h: x.shape[2], w: x.shape[3], o: w.outChannels,
                                       kh: w.kernelHeight, kw: w.kernelWidth, stride: w.stride, padding: w.padding,
                                       format: w.format, hasBias: w.bias != nil, outputType: storageType)
    }

    private func run(_ path: CUDAEightBitConvolution.Path, _ x: CUDATensor, _ w: CUDAEightBitConvolution) throws -> CUDATensor {
        switch path {
        case .eightBit:
            return try runEightBit(try eightBitPlan(x, w, timing: false), x, w)
        case .sixteenBit:
            let weights = try w.sixteenBitWeights(self)
            let input = try fakeQuantize(x, format: w.format, amax: w.inputAmax, smoothing: nil, groupSize: x.count / max(x.shape[0], 1))
            let y = try conv2d(input, weight: weights.weight, bias: weights.bias, stride: weights.stride, padding: weights.padding,
                               weightChannelsLast: weights.weightChannelsLast, forceChannelsLast: weights.onlyChannelsLast)
            weights.lastPath = lastConvolutionPath
            return y
        }
    }

    private func runEightBit(_ plan: CUDNNEightBitGraphs.Plan, _ x: CUDATensor, _ w: CUDAEightBitConvolution) throws -> CUDATensor {
        let shape = eightBitShape(x, w)
        let (n, c, hw) = (shape.n, shape.c, shape.h * shape.w)
        let (oh, ow) = (shape.outputHeight, shape.outputWidth)
        let codes = try context.empty([n, hw, c], dtype: w.format == .int8 ? .int8 : .float8e4m3)
        try compiler.launch(eightBitOp("quantize_channels_last"), grid: ((hw + 31) / 32, (c + 31) / 32, n), block: (32, 8, 1), [
            .tensor(x), .tensor(codes), .int(c), .int(hw), .float(w.inputScale), .int32(w.format == .int8 ? 0 : 1)])
        let y = try output([n, oh * ow, w.outChannels])
        var operands = CUDNNEightBitGraphs.Operands(x: codes.address, weight: w.codes.address, alpha: w.alpha.address,
                                                         bias: w.bias?.address, y: y.address, sums: 0)
        switch plan.form {
        case .fusedEpilogue:
            try eightBitGraphs().execute(plan, shape, operands)
        case .sums:
            let sums = try context.empty(y.shape, dtype: w.format == .int8 ? .int32 : .float32)
            operands.sums = sums.address
            try eightBitGraphs().execute(plan, shape, operands)
            let kernel = w.format == .int8 ? "dequantize_accumulators" : "dequantize_float_sums"
            var arguments: [CUDAKernelArgument] = [.tensor(sums), .tensor(w.alpha), .pointer(w.bias?.address ?? 0)]
            if w.format == .int8 { arguments.append(.pointer(0)) }  // no residual
            arguments += [.tensor(y), .int64(Int64(y.count)), .int(w.outChannels)]
            try compiler.launch(eightBitOp(kernel), grid: elementwiseGrid(y.count), block: (256, 1, 1), arguments)
        }
        withExtendedLifetime(codes) {}
        return try tokensToChannels(y, height: oh, width: ow)
    }
}

/// Real 8-bit convolutions: the NCHW input quantized to channels-last codes with the layer's calibrated scale (the
/// simulation's rounding; or those codes as a resnet's GroupNorm wrote them), cuDNN's 8-bit convolution or our
/// implicit-GEMM kernel on the stored codes, and α[o] and the bias applied to the sums in FP32 (inside the
/// convolution's kernel, or in ours after cuDNN's), then back to NCHW (with a resnet's additions in that pass). Like
/// the 8-bit GEMMs, the only differences from the simulation are the accumulation order and the 16-bit output
/// rounding.
extension CUDAKernels {
    /// y = conv(x) of a quantized layer, by the path measured fastest for x's shape (see `CUDAEightBitConvolution`);
    /// without `allowsWGMMA`, our implicit-GEMM kernel is left out of the choice (for measurements against cuDNN).
    /// x is 16-bit NCHW, or the layer's channels-last input codes [n, h, w, c] from a producer
    /// (`groupNorm(…channelsLastCodes:…)`) once an 8-bit path is chosen for the shape.
    /// `epilogue`: what the result becomes in the pass that turns it back to NCHW.
    package func eightBitConvolution(_ x: CUDATensor, _ w: CUDAEightBitConvolution, allowsWGMMA: Bool = true,
                                     epilogue: CUDAConvolutionOutput = .channels) throws -> CUDATensor {
        let shape = try convolutionInputShape(x, w)
        let capturing = context.allocator.isCapturing
        if let variant = w.forcedWGMMA {
            guard w.runsWarpSpecialized(self), WarpSpecializedGEMM.variants(w.format, depth: w.depth).contains(variant) else {
                throw CUDAError.invalidArgument("convolution \(w.name): our implicit-GEMM kernel needs stride 1, an odd square kernel "
                                                + "with padding kernel / 2, a compute capability 9.0 card, and one of its "
                                                + "\(w.format.reportName) tile variants, not \(variant)")
            }
            w.lastPath = .warpSpecialized(variant)
            return try run(.warpSpecialized(variant), x, shape, w, epilogue)
        }
        let call = CUDAEightBitConvolution.Call(shape: shape, allowsWGMMA: allowsWGMMA)
        if let known = w.paths[call] {
            w.lastPath = known
            return try run(known, x, shape, w, epilogue)
        }
        guard x.dtype != w.codeType else {
            throw CUDAError.invalidArgument("convolution \(w.name): input codes before a path is chosen for \(shape)")
        }
        var y: CUDATensor?
        // Runs `path` for this call and keeps it for this layer and shape (an 8-bit path with the form of the plan
        // that ran, timed on first use of its shape).
        func runPath(_ path: CUDAEightBitConvolution.Path) throws {
            var path = path
            if case .eightBit = path { path = .eightBit(try eightBitPlan(x, shape, w, timing: !capturing).form) }
            y = try run(path, x, shape, w, epilogue)
            w.paths[call] = path
            w.lastPath = path
        }
        // The 8-bit plan where cuDNN has one for the shape, else 16 bit.
        func planned() -> CUDAEightBitConvolution.Path {
            do {
                return .eightBit(try eightBitPlan(x, shape, w, timing: !capturing).form)
            } catch {
                return .sixteenBit("no cuDNN 8-bit plan: \(error)")
            }
        }
        if w.choosesFastestPath {
            // Shared by every layer of this geometry (`CUDATuningTable`); on first use the 8-bit paths are timed
            // against each other and the 16-bit one, and 8 bit is kept only where it is the faster path for this shape.
            try context.tuning.decide(Self.eightBitConvolutionTuningKey(eightBitShape(shape, w)) + (allowsWGMMA ? "" : " without-wgmma"),
                                      encode: \.tuningCode,
                                      decode: CUDAEightBitConvolution.Path.init(tuningCode:), run: runPath) {
                let cuDNN = planned()
                var candidates: [CUDAEightBitConvolution.Path] = []
                if case .eightBit = cuDNN { candidates.append(cuDNN) }
                if allowsWGMMA, w.runsWarpSpecialized(self) {
                    candidates += WarpSpecializedGEMM.variants(w.format, depth: w.depth).map { .warpSpecialized($0) }
                }
                guard let first = candidates.first else { return .init(cuDNN, timed: !capturing, ran: false) }
                if capturing { return .init(first, timed: false, ran: false) }
                // A path that fails to run (e.g. a kernel that does not compile for this card) drops out.
                guard let fastest = CUDATuningTable.fastest(candidates, time: { path in try tuningTime { _ = try run(path, x, shape, w) } }).best else {
                    return .init(.sixteenBit("no 8-bit path ran"), timed: true, ran: false)
                }
                let sixteen = CUDAEightBitConvolution.Path.sixteenBit("")
                let sixteenBit = try tuningTime { _ = try run(sixteen, x, shape, w) }
                let path = sixteenBit >= fastest.milliseconds ? fastest.candidate
                    : .sixteenBit(String(format: "16 bit measured faster (%.1f vs %.1f µs)", sixteenBit * 1000, fastest.milliseconds * 1000))
                return .init(path, timed: true, ran: false)
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

    /// x's shape as [n, c, h, w], checked against the layer: 16-bit NCHW values, or channels-last codes [n, h, w, c].
    private func convolutionInputShape(_ x: CUDATensor, _ w: CUDAEightBitConvolution) throws -> [Int] {
        if x.dtype == w.codeType {
            guard x.shape.count == 4, x.shape[3] == w.inChannels else {
                throw CUDAError.invalidArgument("convolution \(w.name): channels-last codes \(x.shape) for \(w.inChannels) input channels")
            }
            return [x.shape[0], x.shape[3], x.shape[1], x.shape[2]]
        }
        try requireHalf(x, op: "eightBitConvolution")
        guard x.shape.count == 4, x.shape[1] == w.inChannels else {
            throw CUDAError.invalidArgument("convolution \(w.name): input \(x.shape) for \(w.inChannels) input channels")
        }
        return x.shape
    }

    private func eightBitPlan(_ x: CUDATensor, _ shape: [Int], _ w: CUDAEightBitConvolution, timing: Bool) throws -> CUDNNEightBitGraphs.Plan {
        let cudnn = try eightBitGraphs()
        return try cudnn.plan(eightBitShape(shape, w), timing: timing) { plan in _ = try runEightBit(plan, x, shape, w) }
    }

    private func eightBitShape(_ shape: [Int], _ w: CUDAEightBitConvolution) -> CUDNNEightBitGraphs.Shape {
        CUDNNEightBitGraphs.Shape(n: shape[0], c: shape[1], h: shape[2], w: shape[3], o: w.outChannels,
                                       kh: w.kernelHeight, kw: w.kernelWidth, stride: w.stride, padding: w.padding,
                                       format: w.format, hasBias: w.bias != nil, outputType: storageType)
    }

    private func run(_ path: CUDAEightBitConvolution.Path, _ x: CUDATensor, _ shape: [Int], _ w: CUDAEightBitConvolution,
                     _ epilogue: CUDAConvolutionOutput = .channels) throws -> CUDATensor {
        switch path {
        case .eightBit:
            return try runEightBit(try eightBitPlan(x, shape, w, timing: false), x, shape, w, epilogue)
        case .warpSpecialized(let variant):
            return try runWarpSpecialized(variant, x, shape, w, epilogue)
        case .sixteenBit:
            guard x.dtype != w.codeType else {
                throw CUDAError.invalidArgument("convolution \(w.name): runs in 16 bit for \(shape), so it needs its 16-bit input, not codes")
            }
            let weights = try w.sixteenBitWeights(self)
            let input = try fakeQuantize(x, format: w.format, amax: w.inputAmax, smoothing: nil, groupSize: x.count / max(x.shape[0], 1))
            let y = try conv2d(input, weight: weights.weight, bias: weights.bias, stride: weights.stride, padding: weights.padding,
                               weightChannelsLast: weights.weightChannelsLast, forceChannelsLast: weights.onlyChannelsLast)
            weights.lastPath = lastConvolutionPath
            return try finish(y, epilogue)
        }
    }

    /// x [n, c, h, w] 16-bit as channels-last codes [n, h·w, c] with the layer's input scale (x itself where it is
    /// those codes already).
    private func channelsLastCodes(_ x: CUDATensor, _ w: CUDAEightBitConvolution) throws -> CUDATensor {
        if x.dtype == w.codeType { return x.reshaped([x.shape[0], x.shape[1] * x.shape[2], x.shape[3]]) }
        return try channelsLastCodes(x, format: w.format, scale: w.inputScale)
    }

    /// x [n, c, h, w] 16-bit as `format` codes [n, h·w, c] with `scale` (`QuantizedFormat`'s rounding).
    package func channelsLastCodes(_ x: CUDATensor, format: QuantizedFormat, scale: Float) throws -> CUDATensor {
        try requireHalf(x, op: "channelsLastCodes")
        guard x.shape.count == 4, scale.isFinite, scale > 0 else {
            throw CUDAError.invalidArgument("channelsLastCodes: input \(x.shape), scale \(scale)")
        }
        let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        let codes = try context.empty([n, hw, c], dtype: format == .int8 ? .int8 : .float8e4m3)
        try compiler.launch(eightBitOp("quantize_channels_last"), grid: ((hw + 31) / 32, (c + 31) / 32, n), block: (32, 8, 1), [
            .tensor(x), .tensor(codes), .int(c), .int(hw), .float(scale), .int32(format == .int8 ? 0 : 1)])
        return codes
    }

    /// The channels-last codes [n, 2h, 2w, c] of x [n, c, h, w] upsampled 2× (nearest), with `scale`: the codes
    /// `channelsLastCodes` makes from the upsampled tensor, bit for bit, without that tensor.
    package func upsampledChannelsLastCodes(_ x: CUDATensor, format: QuantizedFormat, scale: Float) throws -> CUDATensor {
        try requireHalf(x, op: "upsampledChannelsLastCodes")
        guard x.shape.count == 4, scale.isFinite, scale > 0 else {
            throw CUDAError.invalidArgument("upsampledChannelsLastCodes: input \(x.shape), scale \(scale)")
        }
        let (n, c, h, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let codes = try context.empty([n, 2 * h, 2 * width, c], dtype: format == .int8 ? .int8 : .float8e4m3)
        try compiler.launch(eightBitOp("quantize_channels_last_upsampled2x"), grid: ((h * width + 31) / 32, (c + 31) / 32, n),
                            block: (32, 8, 1), [.tensor(x), .tensor(codes), .int(c), .int(h), .int(width), .float(scale),
                                                .int32(format == .int8 ? 0 : 1)])
        return codes
    }

    private func runWarpSpecialized(_ variant: WarpSpecializedGEMM, _ x: CUDATensor, _ shape: [Int],
                                    _ w: CUDAEightBitConvolution, _ epilogue: CUDAConvolutionOutput) throws -> CUDATensor {
        let (n, h, width) = (shape[0], shape[2], shape[3])
        let codes = try channelsLastCodes(x, w)
        let y = try output([n, h * width, w.outChannels])
        try warpSpecializedConvolution(variant, format: w.format, codes: codes, images: n, height: h, width: width,
                                       weight: w.codes, weightMap: try w.weightMap(for: variant, kernels: self),
                                       epilogue: try w.epilogueOperands(self), y: y)
        withExtendedLifetime(codes) {}
        return try tokensToChannels(y, height: h, width: width, epilogue)
    }

    private func runEightBit(_ plan: CUDNNEightBitGraphs.Plan, _ x: CUDATensor, _ inputShape: [Int],
                             _ w: CUDAEightBitConvolution, _ epilogue: CUDAConvolutionOutput = .channels) throws -> CUDATensor {
        let shape = eightBitShape(inputShape, w)
        let n = shape.n
        let (oh, ow) = (shape.outputHeight, shape.outputWidth)
        let codes = try channelsLastCodes(x, w)
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
        return try tokensToChannels(y, height: oh, width: ow, epilogue)
    }
}

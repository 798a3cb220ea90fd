import Diffuse8
extension CUDAUNetCheck {
    /// The UNet of `directory` quantized with `recipe` after a short calibration on the GPU with random inputs
    /// (`steps` forwards at timesteps spread from 999 to 0): what speed and memory measurements of random-weight
    /// models (SDXL architecture) use, since their images mean nothing. The layers are installed as a quantized
    /// folder's would be (dequantized weights on the host, the 8-bit layer as the weight kind).
    public static func quantizedForBenchmark(directory: String, kernels: CUDAKernels, recipe: QuantizationRecipe, batch: Int,
                                             height: Int, width: Int, contextLength: Int = 77,
                                             steps: Int = 4) throws -> (model: UNet2DConditionModel, quantized: QuantizedUNet) {
        let unet = try UNet2DConditionModel.load(directory: directory)
        let reservoir = 64
        let recorder = CalibrationRecorder(unet: unet, steps: steps, reservoirCapacity: reservoir)
        do {
            let base = CUDABackend(kernels: kernels, fusesLayers: false, runsEightBit: false)
            try base.prepare(unet)
            let recording = RecordingBackend(base, recorder: recorder)
            for step in 0..<steps {
                recorder.step = step
                let inputs = randomInputs(unet.configuration, batch: batch, height: height, width: width, contextLength: contextLength,
                                          seed: 0xCA1B &+ UInt64(step))
                let timestep = Float(999 - step * 999 / max(steps - 1, 1))
                let features = try unet.timeFeatures(timesteps: Array(repeating: timestep, count: batch), timeIds: inputs.timeIds)
                _ = try unet.forward(recording, sample: kernels.upload(inputs.sample), timeFeatures: kernels.upload(features.time),
                                     timeIdFeatures: features.timeIds.map { try kernels.upload($0) },
                                     encoderHiddenStates: kernels.upload(inputs.encoderHiddenStates),
                                     textEmbeds: inputs.textEmbeds.map { try kernels.upload($0) })
            }
            try kernels.context.synchronize()
        }
        recorder.finishBatch()
        try kernels.context.releaseCachedMemory()
        var layers = recorder.statistics
        for i in layers.indices { layers[i].reservoir?.sort() }
        let provenance = CalibrationStatistics.Provenance(
            modelFingerprint: ModelFingerprint.of(unet), steps: steps, promptsHash: "random-inputs", promptCount: 1, guidanceScale: 0,
            seed: 0xCA1B, batchSize: 1, scheduler: "random-inputs", reservoirCapacity: reservoir, shardCount: 1, shards: [0])
        var applied = recipe
        applied.minimumCalibrationPrompts = 0
        let quantized = try Quantizer.quantize(unet, statistics: CalibrationStatistics(provenance: provenance, layers: layers), recipe: applied)
        let byName = Dictionary(quantized.layers.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let inventory = UNetLayerInventory(unet)
        for conv in inventory.convolutions {
            guard let layer = byName[conv.name] else { continue }
            conv.weight = layer.weight.dequantized()
            conv.executionHook = SimulatedQuantizationHook(layer)
        }
        for linear in inventory.linears {
            guard let layer = byName[linear.name] else { continue }
            linear.weight = layer.weight.dequantized()
            linear.executionHook = SimulatedQuantizationHook(layer)
        }
        QuantizedModelFolder.enableFP8Attention(quantized.fp8AttentionModules, probabilityAmax: quantized.fp8ProbabilityAmax, in: unet)
        return (unet, quantized)
    }

    /// Per-layer report lines of one forward (`CUDABackend.layerReport`), slowest first, and a summary per
    /// operation class and precision.
    public static func explain(_ report: [CUDALayerTiming]) -> String {
        var lines = ["layer                                                        kernel                                        8-bit      ms"]
        for r in report.sorted(by: { $0.milliseconds > $1.milliseconds }) {
            lines.append(CUDASelfTest.pad(r.layer, 61) + CUDASelfTest.pad(r.kernel, 46) + CUDASelfTest.pad(r.eightBit ? "yes" : "no", 6)
                         + "\((r.milliseconds * 10_000).rounded() / 10_000)" + (r.includesHostTime ? " *" : ""))
        }
        var classes: [String: (count: Int, ms: Double)] = [:]
        for r in report {
            let key = r.kind + (r.eightBit ? ", 8-bit" : ", 16-bit")
            classes[key, default: (0, 0)].count += 1
            classes[key, default: (0, 0)].ms += r.milliseconds
        }
        lines.append("summary (layers timed one by one, device time; other operations not included):")
        for (key, value) in classes.sorted(by: { $0.value.ms > $1.value.ms }) {
            lines.append("  " + CUDASelfTest.pad(key, 30) + "\(value.count) layers, \((value.ms * 1000).rounded() / 1000) ms")
        }
        let hostBound = report.filter(\.includesHostTime)
        if !hostBound.isEmpty {
            lines.append("* \(hostBound.count) layers (\((hostBound.reduce(0) { $0 + $1.milliseconds } * 1000).rounded() / 1000) ms) blocked the host "
                         + "while the stream waited: their times include the host's time to queue them (upper bounds)")
        }
        return lines.joined(separator: "\n")
    }
}

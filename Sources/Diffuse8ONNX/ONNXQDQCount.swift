import Diffuse8

extension ONNXUNetExporter {
    /// The Q/DQ pairs, by kind, that the export of `unet` quantized at `level` in `format` holds, without
    /// calibrating: every layer the level selects (`QuantizationLevel.quantizes`, FP8 attention where head_dim is a
    /// multiple of 16, as `Quantizer` decides) gets a placeholder quantization, the graph is recorded and nothing is
    /// written. The model's own quantization state is restored afterwards. Placement does not depend on the
    /// calibrated values, so the counts are those of a real quantized folder of this architecture.
    public static func qdqPairCounts(_ unet: UNet2DConditionModel, level: QuantizationLevel, format: QuantizedFormat,
                                     options: ONNXExportOptions = ONNXExportOptions()) throws -> [String: Int] {
        let linears = unet.linearLayers, convolutions = unet.convolutionLayers, attentions = Quantizer.attentionModules(unet)
        let saved = (linears.map(\.executionHook), convolutions.map(\.executionHook), attentions.map(\.usesFP8Attention))
        defer {
            for (l, h) in zip(linears, saved.0) { l.executionHook = h }
            for (c, h) in zip(convolutions, saved.1) { c.executionHook = h }
            for (a, f) in zip(attentions, saved.2) { a.usesFP8Attention = f }
        }
        var fp8Projections = Set<String>()
        for a in attentions {
            a.usesFP8Attention = level == .fp8Attention && format == .fp8 && (a.query.outFeatures / a.heads) % 16 == 0
            if a.usesFP8Attention { fp8Projections.formUnion([a.query.name, a.key.name, a.value.name]) }
        }
        func placeholder(_ name: String, _ kind: QuantizedLayer.Kind, _ shape: [Int], smoothing: Bool) -> SimulatedQuantizationHook {
            let perChannel = format == .int8
            let weight = QuantizedWeight(format: format, shape: shape, codes: [], scales: [Float](repeating: 1, count: perChannel ? shape[0] : 1))
            return SimulatedQuantizationHook(QuantizedLayer(name: name, kind: kind, weight: weight, inputAmax: 1,
                                                            smoothing: smoothing ? [Float](repeating: 1, count: shape[1]) : nil,
                                                            outputAmax: fp8Projections.contains(name) ? 1 : nil))
        }
        for l in linears {
            l.executionHook = level.quantizes(l.name, kind: .linear) ? placeholder(l.name, .linear, l.weightShape, smoothing: true) : nil
        }
        for c in convolutions {
            c.executionHook = level.quantizes(c.name, kind: .conv2d) ? placeholder(c.name, .conv2d, c.weightShape, smoothing: false) : nil
        }
        return try record(unet, options: options).quantization.pairs
    }
}

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The result of quantizing a UNet: every quantized layer plus what the recipe decided.
public struct QuantizedUNet: Sendable {
    public var recipe: QuantizationRecipe
    public var layers: [QuantizedLayer]
    /// α chosen per SmoothQuant layer.
    public var alphas: [String: Float]
    /// Layers where the α search found no smoothing best (s = 1).
    public var unsmoothedLayers: [String] = []
    /// Why the applied recipe differs from the one asked for (too few calibration prompts), nil when it does not.
    public var recipeWarning: String?
    /// Attention modules (prefix of `to_q`) run in FP8 (level 4).
    public var fp8AttentionModules: [String]
    /// Attention modules level 4 left in full precision because head_dim % 16 != 0.
    public var skippedAttentionModules: [String]
    /// Level 4: the calibrated amax of each FP8 attention module's softmax probabilities (module prefix → amax);
    /// a module without one rounds them with amax 1.
    public var fp8ProbabilityAmax: [String: Float] = [:]
    public var statistics: CalibrationStatistics.Provenance?
}

/// Turns a full-precision UNet + calibration statistics + a recipe into quantized layers (DESIGN §3).
public enum Quantizer {
    /// - Parameters:
    ///   - statistics: required unless `recipe.dynamic`; must come from this UNet.
    ///   - log: receives one line per decision worth showing (α search results).
    ///   - recipe: the recipe asked for; `QuantizedUNet.recipe` is the one applied (see
    ///     `QuantizationRecipe.applicable(toCalibrationPrompts:)`).
    public static func quantize(_ unet: UNet2DConditionModel, statistics: CalibrationStatistics?, recipe requested: QuantizationRecipe,
                                log: ((String) -> Void)? = nil) throws -> QuantizedUNet {
        try requested.validate()
        var recipe = requested
        var recipeWarning: String?
        if !requested.dynamic, let statistics {
            (recipe, recipeWarning) = requested.applicable(toCalibrationPrompts: calibrationPrompts(statistics))
        }
        if !recipe.dynamic {
            guard let statistics else {
                throw QuantizationError("static quantization needs calibration statistics (--stats FILE or --calib-prompts FILE); or use --dynamic")
            }
            let fingerprint = ModelFingerprint.of(unet)
            guard statistics.provenance.modelFingerprint == fingerprint else {
                throw QuantizationError("the calibration statistics were computed on another model (fingerprint \(statistics.provenance.modelFingerprint), this model is \(fingerprint)); calibrate this --model")
            }
        }
        let inventory = UNetLayerInventory(unet)
        var result = QuantizedUNet(recipe: recipe, layers: [], alphas: [:], fp8AttentionModules: [], skippedAttentionModules: [],
                                   statistics: statistics?.provenance)
        result.recipeWarning = recipeWarning
        let weightPerChannel = recipe.format == .int8 || recipe.fp8PerChannelWeights || recipe.dynamic

        for conv in inventory.convolutions where recipe.level.quantizes(conv.name, kind: .conv2d) {
            let amax = try recipe.dynamic ? nil : QuantizationRecipe.activationAmax(
                stats(statistics, conv.name), method: recipe.calibration, percentile: recipe.percentile, collect: recipe.collectMethod)
            result.layers.append(QuantizedLayer(name: conv.name, kind: .conv2d,
                                                weight: QuantizedWeight(quantizing: conv.weight, format: recipe.format, perChannel: weightPerChannel),
                                                inputAmax: amax, smoothing: nil, outputAmax: nil))
        }

        // FP8 attention modules (level 4): those with head_dim % 16 == 0.
        var fp8Projections = Set<String>()
        if recipe.level == .fp8Attention {
            for attention in attentionModules(unet) {
                let prefix = String(attention.query.name.dropLast(".to_q".count))
                if (attention.query.outFeatures / attention.heads) % 16 == 0 {
                    result.fp8AttentionModules.append(prefix)
                    fp8Projections.formUnion([attention.query.name, attention.key.name, attention.value.name])
                    if let amax = try probabilityAmax(statistics, query: attention.query.name, recipe: recipe) {
                        result.fp8ProbabilityAmax[prefix] = amax
                    }
                } else {
                    result.skippedAttentionModules.append(prefix)
                }
            }
        }

        // Layers that read one tensor (an attention module's Q/K/V; every cross-attention's K/V, which all read the
        // text context) are quantized as one stacked layer: one SmoothQuant vector, one α, one input scale and
        // (per-tensor formats) one weight scale, so a backend can run them as one 8-bit GEMM — whose input the
        // producer (the LayerNorm before Q/K/V) can write, or, for the context, that is quantized once per forward.
        let quantized = inventory.linears.filter { recipe.level.quantizes($0.name, kind: .linear) }
        for group in inputGroups(unet, among: Set(quantized.map(ObjectIdentifier.init)), separate: recipe.dynamic) {
            let layers = try quantizeLinears(group, statistics: statistics, recipe: recipe, perChannel: weightPerChannel,
                                             fp8Projections: fp8Projections, result: &result, log: log)
            result.layers += layers
        }
        return result
    }

    /// The quantized Linear layers in execution order, grouped by shared input: each self-attention's Q, K and V form
    /// a group, and so do the K and V of every cross-attention reading a text context of one width (they all read the
    /// same `encoder_hidden_states`); every other layer is alone. `separate`: no groups.
    static func inputGroups(_ unet: UNet2DConditionModel, among quantized: Set<ObjectIdentifier>, separate: Bool) -> [[Linear]] {
        var groupOf: [ObjectIdentifier: Int] = [:], siblings: [[Linear]] = []
        let blocks = unet.transformers.flatMap(\.blocks)
        var contextReaders: [Int: [Linear]] = [:], contextWidths: [Int] = []
        for block in blocks {
            let width = block.crossAttention.key.inFeatures
            if contextReaders[width] == nil { contextWidths.append(width) }
            contextReaders[width, default: []] += [block.crossAttention.key, block.crossAttention.value]
        }
        let readersOfOneTensor = separate ? [] : blocks.map { [$0.selfAttention.query, $0.selfAttention.key, $0.selfAttention.value] }
            + contextWidths.compactMap { contextReaders[$0] }
        for readers in readersOfOneTensor {
            let members = readers.filter { quantized.contains(ObjectIdentifier($0)) }
            guard members.count > 1 else { continue }
            for m in members { groupOf[ObjectIdentifier(m)] = siblings.count }
            siblings.append(members)
        }
        var groups: [[Linear]] = [], emitted = Set<Int>()
        for linear in UNetLayerInventory(unet).linears where quantized.contains(ObjectIdentifier(linear)) {
            guard let g = groupOf[ObjectIdentifier(linear)] else { groups.append([linear]); continue }
            if emitted.insert(g).inserted { groups.append(siblings[g]) }
        }
        return groups
    }

    /// Quantizes `group` (layers reading one tensor) as the layer of their stacked weights [Σ out, in], then splits the
    /// result back into one `QuantizedLayer` per member.
    private static func quantizeLinears(_ group: [Linear], statistics: CalibrationStatistics?, recipe: QuantizationRecipe,
                                        perChannel weightPerChannel: Bool, fp8Projections: Set<String>,
                                        result: inout QuantizedUNet, log: ((String) -> Void)?) throws -> [QuantizedLayer] {
        let linear = group.count == 1 ? group[0]
            : Linear(name: group.count <= 3 ? group.map(\.name).joined(separator: " + ")
                        : "\(group[0].name) + \(group.count - 2) more + \(group[group.count - 1].name)",
                     weight: Tensor(shape: [group.map(\.outFeatures).reduce(0, +), group[0].inFeatures],
                                    scalars: group.flatMap(\.weight.scalars)), bias: nil)
        if recipe.dynamic {
            return split(QuantizedWeight(quantizing: linear.weight, format: recipe.format, perChannel: true), group,
                         inputAmax: nil, smoothing: nil, outputAmax: [:])
        }
        var channelAmax: [Float] = [], reservoir: RowReservoir?
        var outputAmax: [String: Float] = [:]
        for member in group {
            let s = try stats(statistics, member.name)
            if fp8Projections.contains(member.name) {
                guard let o = s.outputAmax else {
                    throw QuantizationError("the statistics have no output amax for \(member.name), which FP8 attention needs; recalibrate with this version")
                }
                outputAmax[member.name] = o.max() ?? 0
            }
            guard let memberAmax = s.channelAmax else {
                throw QuantizationError("the statistics have no per-channel amax for Linear layer \(member.name); recalibrate with this version")
            }
            guard memberAmax.count == member.inFeatures, s.reservoir.map({ $0.width == member.inFeatures }) ?? true else {
                throw QuantizationError("the statistics of Linear layer \(member.name) have \(memberAmax.count) channels, the layer has \(member.inFeatures) inputs; they belong to another model")
            }
            // the members see the same tensor, so their statistics agree; the max keeps every member's range
            channelAmax = channelAmax.isEmpty ? memberAmax : zip(channelAmax, memberAmax).map { max($0, $1) }
            if reservoir == nil { reservoir = s.reservoir }
        }
        var alpha: Float?
        switch recipe.smoothing {
        case .none: alpha = nil
        case .fixed(let a): alpha = a
        case .search:
            guard let reservoir, reservoir.count > 0 else {
                throw QuantizationError("--alpha search needs sampled activations, but the statistics of \(linear.name) have none; calibrate with --reservoir-rows > 0 or use a fixed --alpha")
            }
            let (best, errors) = searchAlpha(linear, channelAmax: channelAmax, samples: reservoir.tensor, recipe: recipe, perChannel: weightPerChannel)
            alpha = best
            if best == nil { result.unsmoothedLayers += group.map(\.name) }
            log?("\(linear.name): α = \(best.map { String($0) } ?? "none") (output MSE per α, then without smoothing: \(errors.map { String(Float($0)) }.joined(separator: " ")))")
        }
        var smoothing: [Float]?
        var weight = linear.weight
        var amax = channelAmax.max() ?? 0  // Linear inputs: max calibration (percentile is for Conv2d inputs)
        if let alpha {
            let scales = QuantizationRecipe.smoothingScales(weight: linear.weight, channelAmax: channelAmax, alpha: alpha)
            smoothing = scales
            weight = smoothedWeight(linear.weight, scales)
            amax = zip(channelAmax, scales).map { $0 * $1 }.max() ?? 0
            for member in group { result.alphas[member.name] = alpha }
        }
        return split(QuantizedWeight(quantizing: weight, format: recipe.format, perChannel: weightPerChannel), group,
                     inputAmax: amax, smoothing: smoothing, outputAmax: outputAmax)
    }

    /// One `QuantizedLayer` per member of `group` from the quantized stacked weight: its rows, and its per-channel
    /// scales or the shared per-tensor one.
    private static func split(_ stacked: QuantizedWeight, _ group: [Linear], inputAmax: Float?, smoothing: [Float]?,
                              outputAmax: [String: Float]) -> [QuantizedLayer] {
        var row = 0
        return group.map { member in
            let rows = member.outFeatures, columns = member.inFeatures
            let scales = stacked.scales.count == 1 ? stacked.scales : Array(stacked.scales[row..<(row + rows)])
            let weight = QuantizedWeight(format: stacked.format, shape: [rows, columns],
                                         codes: Array(stacked.codes[(row * columns)..<((row + rows) * columns)]), scales: scales)
            row += rows
            return QuantizedLayer(name: member.name, kind: .linear, weight: weight, inputAmax: inputAmax, smoothing: smoothing,
                                  outputAmax: outputAmax[member.name])
        }
    }

    /// The probability amax of an FP8 attention module (max over steps of the calibrated max softmax probability),
    /// or nil for amax 1: asked for by the recipe, statistics without the value (recorded before it), or a max of 0.
    static func probabilityAmax(_ statistics: CalibrationStatistics?, query: String, recipe: QuantizationRecipe) throws -> Float? {
        guard recipe.calibratedProbabilityRange, !recipe.dynamic, let p = try stats(statistics, query).probabilityAmax,
              let amax = p.max(), amax > 0, amax < 1 else { return nil }
        return amax
    }

    /// How many calibration prompts the statistics cover: batches seen × batch size, at most the prompt count.
    public static func calibrationPrompts(_ statistics: CalibrationStatistics) -> Int {
        let batches = statistics.layers.compactMap { $0.batchCount.max() }.max() ?? 0
        return min(statistics.provenance.promptCount, Int(batches) * max(1, statistics.provenance.batchSize))
    }

    static func stats(_ statistics: CalibrationStatistics?, _ name: String) throws -> LayerStatistics {
        guard let s = statistics?.layer(named: name) else {
            throw QuantizationError("the calibration statistics have no entry for layer \(name); they belong to another model layout")
        }
        guard s.batchCount.contains(where: { $0 > 0 }) else {
            throw QuantizationError("the calibration statistics of \(name) are empty (no batches); the calibration did not run on any prompt")
        }
        return s
    }

    /// W[:, j] / s_j (the weight side of x ⊙ s; the product is unchanged in exact arithmetic).
    static func smoothedWeight(_ w: Tensor, _ s: [Float]) -> Tensor {
        let columns = w.shape[1]
        var out = w
        for i in out.scalars.indices { out.scalars[i] /= s[i % columns] }
        return out
    }

    /// Per-layer α search: the α of the grid minimising the mean squared error of the quantized layer's
    /// output against full precision (bias left out: it is added in full precision) on the sampled
    /// calibration rows. Beyond the grid, "no smoothing" (s = 1) is also a candidate — on models without
    /// activation outliers it often wins, and leaving it out can make the search worse than no SmoothQuant.
    /// Returns the chosen α (nil = no smoothing) and the MSE of every grid α followed by that of no smoothing.
    public static func searchAlpha(_ linear: Linear, channelAmax: [Float], samples: Tensor, recipe: QuantizationRecipe,
                                   perChannel: Bool) -> (Float?, [Double]) {
        let reference = CPUKernels.linear(samples, weight: linear.weight, bias: nil)
        func error(_ scales: [Float]?) -> Double {
            let weight = QuantizedWeight(quantizing: scales.map { smoothedWeight(linear.weight, $0) } ?? linear.weight,
                                         format: recipe.format, perChannel: perChannel).dequantized()
            let amax = scales.map { s in zip(channelAmax, s).map { $0 * $1 }.max() ?? 0 } ?? (channelAmax.max() ?? 0)
            let input = QuantizedLayer.quantizeActivation(samples, kind: .linear, format: recipe.format, amax: amax, smoothing: scales)
            let output = CPUKernels.linear(input, weight: weight, bias: nil)
            var sum = 0.0
            for i in output.scalars.indices {
                let d = Double(output.scalars[i]) - Double(reference.scalars[i])
                sum += d * d
            }
            return sum / Double(max(1, output.count))
        }
        var best: (alpha: Float?, error: Double) = (nil, error(nil))
        var errors: [Double] = []
        for alpha in recipe.alphaGrid {
            let e = error(QuantizationRecipe.smoothingScales(weight: linear.weight, channelAmax: channelAmax, alpha: alpha))
            errors.append(e)
            if e < best.error { best = (alpha, e) }
        }
        return (best.alpha, errors + [best.alpha == nil ? best.error : error(nil)])
    }

    /// Every attention module of the UNet (self and cross), in execution order.
    public static func attentionModules(_ unet: UNet2DConditionModel) -> [MultiHeadAttention] {
        unet.transformers.flatMap(\.blocks).flatMap { [$0.selfAttention, $0.crossAttention] }
    }
}

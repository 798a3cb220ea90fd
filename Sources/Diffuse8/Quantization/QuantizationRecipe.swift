#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Which layers are quantized (DESIGN §3): 1 = Conv2d only; 2 = + feed-forward Linear (`ff.net.*`);
/// 2.5 = + `to_q`/`to_k`/`to_v`; 3 = + every other Linear; 4 = level 3 + FP8 attention (Q, K, V and the
/// softmax output in FP8; heads with head_dim % 16 == 0; FP8 format only). Always kept in full precision:
/// `time_embedding`, `time_emb_proj`, `add_embedding`, `conv_in`, `conv_out`, `conv_shortcut`.
public enum QuantizationLevel: String, Sendable, CaseIterable, Codable {
    case convolutions = "1"
    case feedForward = "2"
    case attentionProjections = "2.5"
    case allLinear = "3"
    case fp8Attention = "4"

    public init(parsing text: String) throws {
        guard let level = QuantizationLevel(rawValue: text == "3.0" ? "3" : text == "2.0" ? "2" : text == "1.0" ? "1" : text == "4.0" ? "4" : text) else {
            throw QuantizationError("unknown quantization level '\(text)'; choose one of 1, 2, 2.5, 3, 4")
        }
        self = level
    }

    var rank: Double { Double(rawValue)! }

    /// Layer names that stay in full precision at every level (matched as whole name components).
    public static let excludedComponents = ["time_embedding", "time_emb_proj", "add_embedding", "conv_in", "conv_out", "conv_shortcut"]

    public static func isExcluded(_ name: String) -> Bool {
        let parts = name.split(separator: ".").map(String.init)
        return parts.contains { excludedComponents.contains($0) }
    }

    /// Whether this level quantizes the layer named `name` of kind `kind`.
    public func quantizes(_ name: String, kind: LayerStatistics.Kind) -> Bool {
        if Self.isExcluded(name) { return false }
        if kind == .conv2d { return true }
        if name.contains(".ff.net.") { return rank >= 2 }
        if UNetLayerInventory.isAttentionProjection(name) { return rank >= 2.5 }
        return rank >= 3
    }
}

/// How the per-tensor activation amax of Conv2d inputs is chosen from the per-step statistics.
public enum CalibrationMethod: String, Sendable, CaseIterable, Codable {
    /// The largest amax ever seen (all steps, all batches).
    case max
    /// Percentile Quant over the first K = floor(T·p) steps with a collect method.
    case percentile
}

/// Percentile Quant's reduction over steps and batches (DESIGN §3, from NVIDIA's PercentileCalibrator).
public enum CollectMethod: String, Sendable, CaseIterable, Codable {
    /// min over the first K steps of the per-step mean over batches (default).
    case minMean = "min-mean"
    /// min over the first K steps of the per-step max over batches.
    case minMax = "min-max"
    /// mean over the first K steps of the per-step max over batches.
    case meanMax = "mean-max"
    /// min over the first K steps of the per-step min over batches (the smallest amax seen).
    case globalMin = "global_min"
}

/// SmoothQuant for Linear layers: off, one α for all, or α searched per layer.
public enum SmoothingChoice: Sendable, Equatable {
    case none
    case fixed(Float)
    case search

    public init(parsing text: String) throws {
        switch text.lowercased() {
        case "none", "off": self = .none
        case "search": self = .search
        default:
            guard let a = Float(text), (0...1).contains(a) else {
                throw QuantizationError("--alpha must be a number in [0, 1], 'search' or 'none', got '\(text)'")
            }
            self = .fixed(a)
        }
    }

    public var text: String {
        switch self {
        case .none: return "none"
        case .fixed(let a): return String(a)
        case .search: return "search"
        }
    }
}

/// A full quantization recipe (what `diffuse8 quantize` flags select).
public struct QuantizationRecipe: Sendable {
    public var format: QuantizedFormat = .int8
    public var level: QuantizationLevel = .allLinear
    public var calibration: CalibrationMethod = .percentile
    /// Fraction of timesteps in (0, 1] for Percentile Quant.
    public var percentile: Double = 1.0
    public var collectMethod: CollectMethod = .minMean
    public var smoothing: SmoothingChoice = .fixed(0.8)
    /// α grid for `.search`: 0, step, 2·step, … 1.
    public var alphaStep: Float = 0.1
    /// Dynamic quantization: per-token activation scales at run time, per-channel weights, no calibration.
    public var dynamic = false
    /// FP8 weights per output channel instead of per tensor.
    public var fp8PerChannelWeights = false
    /// The fewest calibration prompts the statistics must cover before the recipe trusts ranges that clip
    /// (Percentile Quant on Conv2d inputs) or flatten the channels (SmoothQuant). Below it the recipe uses max
    /// ranges without smoothing (`applicable(toCalibrationPrompts:)`). 0 = always apply the recipe as given.
    ///
    /// Why: a few prompts see lower activation maxima than the prompts a user generates later, most of all at
    /// the last steps, and both clipping and SmoothQuant (which leaves every channel at the calibrated edge) turn
    /// that under-estimate into clipping error; plain max keeps the headroom of the non-maximal steps and channels.
    /// On the default model, 6 short calibration prompts made mean-max + α search 3 dB worse than max, 32 prompts
    /// 2 dB better (docs/QUALITY.md).
    public var minimumCalibrationPrompts = 0
    /// Level 4: round each FP8 attention module's softmax probabilities with their calibrated max as amax
    /// (ModelOpt's max-calibrated `softmax_quantizer`; statistics recorded on the CPU) instead of 1 (NVIDIA's FP8
    /// attention export). Off by default: on the default model the two measured the same (docs/QUALITY.md).
    public var calibratedProbabilityRange = false

    public init() {}

    /// The presets of `diffuse8 quantize --preset`, resolved for a number format: `recommended` (see
    /// `recommended(for:)`), `nvidia`, `naive`.
    public static func preset(named name: String, format: QuantizedFormat) throws -> QuantizationRecipe {
        var r: QuantizationRecipe
        switch name {
        case "recommended": r = recommended(for: format)
        case "nvidia": r = nvidia
        case "naive": r = naiveMax
        default: throw QuantizationError("unknown --preset '\(name)'; choose recommended, nvidia or naive")
        }
        r.format = format
        return r
    }

    /// The recommended recipe for a format. INT8: `recommended`. FP8: max ranges without SmoothQuant (ModelOpt's FP8
    /// recipe) — E4M3 keeps its relative precision across the range, so clipping buys no resolution and smoothing
    /// only moves error between activations and weights; on the default model the INT8 recipe cost FP8 0.8 dB at
    /// level 3 (docs/QUALITY.md).
    public static func recommended(for format: QuantizedFormat) -> QuantizationRecipe {
        var r = format == .fp8 ? naiveMax : recommended
        r.format = format
        return r
    }

    /// The recommended recipe (the default of `diffuse8 quantize`, docs/QUALITY.md): Percentile Quant with
    /// collect method mean-max (p = 1) on Conv2d inputs, SmoothQuant α 0.8 on Linear layers, and max ranges
    /// without smoothing when the statistics cover fewer than 32 prompts. (A fixed α 0.8 matched or beat the
    /// per-layer α search on every evaluation of the default model, and needs no sampled rows.)
    public static var recommended: QuantizationRecipe {
        var r = QuantizationRecipe()
        r.calibration = .percentile
        r.collectMethod = .meanMax
        r.smoothing = .fixed(0.8)
        r.minimumCalibrationPrompts = 32
        return r
    }

    /// NVIDIA's diffusers-example recipe as DESIGN §3 describes it: Percentile Quant with min-mean, α 0.8.
    public static var nvidia: QuantizationRecipe { QuantizationRecipe() }

    /// Naive max calibration: max ranges everywhere, no SmoothQuant.
    public static var naiveMax: QuantizationRecipe {
        var r = QuantizationRecipe()
        r.calibration = .max
        r.smoothing = .none
        return r
    }

    /// The recipe to apply to statistics that cover `prompts` calibration prompts, and why it differs (nil when
    /// it does not): below `minimumCalibrationPrompts`, max calibration without smoothing (dynamic recipes and
    /// recipes that neither clip nor smooth are returned as they are).
    public func applicable(toCalibrationPrompts prompts: Int) -> (recipe: QuantizationRecipe, warning: String?) {
        let clips = calibration == .percentile
        let smooths = smoothing != .none
        guard !dynamic, prompts < minimumCalibrationPrompts, clips || smooths else { return (self, nil) }
        var r = self
        r.calibration = .max
        r.smoothing = .none
        let what = [clips ? "Percentile Quant (\(collectMethod.rawValue))" : nil, smooths ? "SmoothQuant (α \(smoothing.text))" : nil]
            .compactMap { $0 }.joined(separator: " and ")
        return (r, "the calibration statistics cover \(prompts) prompt\(prompts == 1 ? "" : "s"), fewer than \(minimumCalibrationPrompts): "
                + "ranges seen on so few prompts are too low for other prompts, so \(what) would clip; using max ranges without smoothing instead. "
                + "Calibrate with at least \(minimumCalibrationPrompts) prompts like the ones you will generate for the full recipe (or set the minimum to 0 to force it).")
    }

    /// Throws a clear error for impossible combinations.
    public func validate() throws {
        guard percentile > 0 && percentile <= 1 else {
            throw QuantizationError("--percentile \(percentile) is outside (0, 1]; it is the fraction of timesteps whose statistics are used (1.0 = all)")
        }
        if level == .fp8Attention && format != .fp8 {
            throw QuantizationError("level 4 quantizes attention (Q, K, V, softmax) to FP8 and needs --format fp8; INT8 attention is not supported, use --level 3 with --format int8")
        }
        guard alphaStep >= 0.001 && alphaStep <= 1 else { throw QuantizationError("--alpha-step must be in [0.001, 1]") }
    }

    /// The α values the search tries.
    public var alphaGrid: [Float] {
        let n = Int((1 / alphaStep).rounded())
        return (0...n).map { min(1, Float($0) * alphaStep) }
    }

    // MARK: - Formulas

    /// The per-tensor activation amax of a layer input from its per-step statistics.
    ///
    /// `.max`: max over all steps. `.percentile`: K = floor(T·p) first steps (at least 1), then
    /// `collectMethod`. `min-mean` uses the true mean over batches (sum / batch count); NVIDIA's code
    /// divides the sum by T instead — a quirk we do not copy.
    public static func activationAmax(_ s: LayerStatistics, method: CalibrationMethod, percentile: Double,
                                      collect: CollectMethod) -> Float {
        let steps = s.amaxMax.indices.filter { s.batchCount[$0] > 0 }
        guard !steps.isEmpty else { return 0 }
        if method == .max { return steps.map { s.amaxMax[$0] }.max()! }
        let k = max(1, Int((Double(s.amaxMax.count) * percentile).rounded(.down)))
        let first = steps.filter { $0 < k }
        guard !first.isEmpty else { return steps.map { s.amaxMax[$0] }.max()! }
        switch collect {
        case .minMean: return first.map { Float(s.amaxSum[$0] / s.batchCount[$0]) }.min()!
        case .minMax: return first.map { s.amaxMax[$0] }.min()!
        case .meanMax: return Float(first.map { Double(s.amaxMax[$0]) }.reduce(0, +) / Double(first.count))
        case .globalMin: return first.map { s.amaxMin[$0] }.min()!
        }
    }

    /// SmoothQuant's per-input-channel factors: s_j = max|W[:,j]|^(1-α) / max|X_j|^α, 1 where either max
    /// is 0, clamped to [1e-4, 1e4] (DESIGN §3's formula, NVIDIA ModelOpt's `pre_quant_scale`). The layer
    /// computes (x ⊙ s) · (W / s)ᵀ: the activation is **multiplied** by s and the weight divided.
    ///
    /// DESIGN §3 and the issue say "weights × s, activations ÷ s"; with this s that would give
    /// x / s = x^(1+α) / w^(1-α), amplifying the outlier channels SmoothQuant exists to tame (measured:
    /// 50–100× the output error of no smoothing on the reference layer). Multiplying by this s is the same as
    /// dividing by the SmoothQuant paper's s = max|X_j|^α / max|W_j|^(1-α), which is what the paper and
    /// ModelOpt do; we follow that.
    public static func smoothingScales(weight: Tensor, channelAmax: [Float], alpha: Float) -> [Float] {
        let columnAmax = weightColumnAmax(weight)
        return zip(columnAmax, channelAmax).map { w, x in
            guard w > 0, x > 0 else { return 1 }
            let s = Float(pow(Double(w), Double(1 - alpha)) / pow(Double(x), Double(alpha)))
            return min(max(s, 1e-4), 1e4)
        }
    }

    /// max |W[:, j]| over output rows, per input column j.
    static func weightColumnAmax(_ weight: Tensor) -> [Float] {
        let rows = weight.shape[0], columns = weight.shape[1]
        var out = [Float](repeating: 0, count: columns)
        for o in 0..<rows { for j in 0..<columns { out[j] = max(out[j], abs(weight.scalars[o * columns + j])) } }
        return out
    }
}

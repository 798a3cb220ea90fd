#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// The JSON recipe stored as `unet/quantization.json` in a quantized model folder.
public struct QuantizationManifest: Codable, Sendable {
    public var toolVersion: String
    public var format: QuantizedFormat
    public var level: QuantizationLevel
    public var dynamic: Bool
    public var calibration: CalibrationMethod?
    public var percentile: Double?
    public var collectMethod: CollectMethod?
    /// "none", a number, or "search".
    public var alpha: String?
    public var alphaPerLayer: [String: Float]
    /// Linear layers the α search left unsmoothed (no smoothing had the lowest output error).
    public var unsmoothedLayers: [String]?
    public var weightGranularity: String
    public var calibrationPromptsHash: String?
    public var calibrationPromptCount: Int?
    public var calibrationSteps: Int?
    public var modelFingerprint: String?
    public var quantizedLayers: [String]
    public var fp8AttentionModules: [String]
    public var fullPrecisionAttentionModules: [String]

    enum CodingKeys: String, CodingKey {
        case toolVersion = "tool_version", format, level, dynamic, calibration, percentile
        case collectMethod = "collect_method", alpha, alphaPerLayer = "alpha_per_layer", unsmoothedLayers = "unsmoothed_layers"
        case weightGranularity = "weight_granularity", calibrationPromptsHash = "calibration_prompts_hash"
        case calibrationPromptCount = "calibration_prompt_count", calibrationSteps = "calibration_steps"
        case modelFingerprint = "model_fingerprint", quantizedLayers = "quantized_layers"
        case fp8AttentionModules = "fp8_attention_modules", fullPrecisionAttentionModules = "full_precision_attention_modules"
    }
}

/// A quantized model folder: the diffusers folder (other components copied, never linked) with
/// `unet/diffusion_pytorch_model.safetensors` holding quantized layers' weights as I8 / F8_E4M3 codes
/// plus, per quantized layer `<n>`: `<n>.weight_scale` (F32 [O] or [1]), `<n>.input_amax` (F32 [1],
/// absent in dynamic mode), `<n>.smooth_scale` (F32 [in], SmoothQuant divisors), `<n>.output_amax`
/// (F32 [1], FP8 attention Q/K/V); per FP8 attention module `<m>` (the prefix of its `to_q`, e.g.
/// `….transformer_blocks.0.attn1`) optionally `<m>.probability_amax` (F32 [1], in (0, 1]: the calibrated max of its
/// softmax probabilities, which are rounded to FP8 with scale amax / 448; absent = amax 1, as folders written
/// before it); every other tensor as in the source; and `unet/quantization.json`.
public enum QuantizedModelFolder {
    public static let toolVersion = "diffuse8-quant 0.1"
    public static let manifestName = "quantization.json"
    static let extraSuffixes = [".weight_scale", ".input_amax", ".smooth_scale", ".output_amax", probabilityAmaxSuffix]
    static let probabilityAmaxSuffix = ".probability_amax"

    /// Writes the folder atomically: built next to `output` under a temporary name, renamed at the end.
    /// Refuses to overwrite an existing `output`.
    public static func write(source: String, quantized: QuantizedUNet, to output: String) throws {
        let fm = FileManager.default
        let output = output.hasSuffix("/") && output.count > 1 ? String(output.dropLast()) : output
        guard !fm.fileExists(atPath: output) else {
            throw QuantizationError("\(output) already exists; remove it or choose another -o")
        }
        let folder = try DiffusersFolder(path: source)
        try AtomicFolderWriter.write(to: output, renameFailure: QuantizationError("cannot move the finished folder into place at \(output)")) { temporary in
            for entry in try fm.contentsOfDirectory(atPath: source) where entry != "unet" && !entry.hasPrefix(".") {
                try copy(source + "/" + entry, temporary + "/" + entry)
            }
            let unetSource = try folder.folder(of: "unet")
            try fm.createDirectory(atPath: temporary + "/unet", withIntermediateDirectories: true)
            try fm.copyItem(atPath: unetSource + "/config.json", toPath: temporary + "/unet/config.json")
            try writeWeights(unetSource: unetSource, quantized: quantized, to: temporary + "/unet/diffusion_pytorch_model.safetensors")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFileWriter.write(Array(try encoder.encode(manifest(quantized))), to: temporary + "/unet/" + manifestName)
            TestPausePoint.reach("quantized-folder-written")
        }
    }

    static func manifest(_ q: QuantizedUNet) -> QuantizationManifest {
        let r = q.recipe
        return QuantizationManifest(
            toolVersion: toolVersion, format: r.format, level: r.level, dynamic: r.dynamic,
            calibration: r.dynamic ? nil : r.calibration, percentile: r.dynamic ? nil : r.percentile,
            collectMethod: r.dynamic ? nil : r.collectMethod, alpha: r.dynamic ? nil : r.smoothing.text,
            alphaPerLayer: q.alphas, unsmoothedLayers: q.unsmoothedLayers,
            weightGranularity: r.format == .int8 || r.fp8PerChannelWeights || r.dynamic ? "per-output-channel" : "per-tensor",
            calibrationPromptsHash: q.statistics?.promptsHash, calibrationPromptCount: q.statistics?.promptCount,
            calibrationSteps: q.statistics?.steps, modelFingerprint: q.statistics?.modelFingerprint,
            quantizedLayers: q.layers.map(\.name), fp8AttentionModules: q.fp8AttentionModules,
            fullPrecisionAttentionModules: q.skippedAttentionModules)
    }

    static func writeWeights(unetSource: String, quantized: QuantizedUNet, to path: String) throws {
        let store = try ComponentWeights.open(directory: unetSource)
        let layers = Dictionary(uniqueKeysWithValues: quantized.layers.map { ($0.name + ".weight", $0) })
        var writer = SafetensorsWriter(metadata: ["format": "pt", "quantization": "diffuse8"])
        for name in store.tensorNames {
            if let layer = layers[name] {
                try writer.add(name, dtype: layer.format.storageDType, shape: layer.weight.shape, bytes: layer.weight.codes)
                let n = layer.name
                try writer.add(n + ".weight_scale", Tensor(shape: [layer.weight.scales.count], scalars: layer.weight.scales))
                if let a = layer.inputAmax { try writer.add(n + ".input_amax", Tensor(shape: [1], scalars: [a])) }
                if let s = layer.smoothing { try writer.add(n + ".smooth_scale", Tensor(shape: [s.count], scalars: s)) }
                if let o = layer.outputAmax { try writer.add(n + ".output_amax", Tensor(shape: [1], scalars: [o])) }
            } else {
                let entry = try store.entry(named: name)  // copied as stored (F16 stays F16)
                try writer.add(name, dtype: entry.dtype, shape: entry.shape, bytes: Array(try store.rawBytes(named: name)))
            }
        }
        for module in quantized.fp8AttentionModules {
            guard let amax = quantized.fp8ProbabilityAmax[module] else { continue }
            try writer.add(module + probabilityAmaxSuffix, Tensor(shape: [1], scalars: [amax]))
        }
        try writer.write(to: path)
    }

    /// Copies `from` (a file or a folder, recursively) to `to`. Copies, not hard links: a link would make an
    /// edit of a file in one model silently change the other.
    static func copy(_ from: String, _ to: String) throws {
        let fm = FileManager.default
        var info = stat()
        guard stat(from, &info) == 0 else { throw QuantizationError("cannot read \(from)") }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            try fm.createDirectory(atPath: to, withIntermediateDirectories: true)
            for entry in try fm.contentsOfDirectory(atPath: from) where !entry.hasPrefix(".") { try copy(from + "/" + entry, to + "/" + entry) }
        } else if (info.st_mode & S_IFMT) == S_IFREG {
            try fm.copyItem(atPath: from, toPath: to)
        } else {
            throw QuantizationError("\(from) is not a regular file or folder; a model folder holds only files and folders")
        }
    }

    // MARK: - Loading

    /// Whether `unetDirectory` holds a quantized UNet.
    public static func isQuantized(unetDirectory: String) -> Bool {
        FileManager.default.fileExists(atPath: unetDirectory + "/" + manifestName)
    }

    /// The recipe of a quantized `unet/` folder; nil for a plain one.
    public static func manifest(unetDirectory: String) throws -> QuantizationManifest? {
        guard isQuantized(unetDirectory: unetDirectory) else { return nil }
        let manifestPath = unetDirectory + "/" + manifestName
        guard let data = InputFile.contents(atPath: manifestPath) else {
            throw QuantizationError("cannot read \(manifestPath)")
        }
        do { return try JSONDecoder().decode(QuantizationManifest.self, from: data) } catch {
            throw QuantizationError("\(manifestPath) is not a valid quantization recipe (\(error)); re-run diffuse8 quantize")
        }
    }

    /// Loads a `unet/` folder, plain or quantized; a quantized one runs as `execution` says (simulated by default).
    public static func loadUNet(directory: String, execution: QuantizedExecution = .simulated) throws -> UNet2DConditionModel {
        guard isQuantized(unetDirectory: directory) else { return try UNet2DConditionModel.load(directory: directory) }
        let (unet, _) = try loadQuantizedUNet(directory: directory, execution: execution)
        return unet
    }

    /// Loads a quantized `unet/` folder and installs the quantized layers: simulated, or (`.native`) the CPU's native
    /// execution (`CPUNativeQuantization`: INT8 kernels on packed codes, FP8 codes expanded per tile) with no FP32
    /// copy of the weights ever made.
    public static func loadQuantizedUNet(directory: String, execution: QuantizedExecution = .simulated) throws -> (UNet2DConditionModel, QuantizationManifest) {
        let manifestPath = directory + "/" + manifestName
        guard let manifest = try manifest(unetDirectory: directory) else { throw QuantizationError("cannot read \(manifestPath)") }
        let file = try SafetensorsFile(path: directory + "/diffusion_pytorch_model.safetensors")
        let native = execution == .native
        let store = DequantizingStore(file: file, format: manifest.format,
                                      placeholders: native ? Set(manifest.quantizedLayers.map { $0 + ".weight" }) : [])
        let configuration = try UNetConfiguration(contentsOf: directory + "/config.json")
        let unet = try UNet2DConditionModel(configuration: configuration, weights: store)
        let inventory = UNetLayerInventory(unet)
        let slots = inventory.convolutions.map { LayerSlot(name: $0.name, kind: .conv2d, inputChannels: $0.inChannels) }
            + inventory.linears.map { LayerSlot(name: $0.name, kind: .linear, inputChannels: $0.inFeatures) }
        let layers = try quantizedLayers(manifest: manifest, manifestPath: manifestPath, store: store, slots: slots)
        for conv in inventory.convolutions {
            guard let layer = layers[conv.name] else { continue }
            if native { CPUNativeQuantization.install(layer, on: conv) } else { conv.executionHook = SimulatedQuantizationHook(layer) }
        }
        for linear in inventory.linears {
            guard let layer = layers[linear.name] else { continue }
            if native { CPUNativeQuantization.install(layer, on: linear) } else { linear.executionHook = SimulatedQuantizationHook(layer) }
        }
        enableFP8Attention(manifest.fp8AttentionModules,
                           probabilityAmax: try probabilityAmax(manifest: manifest, manifestPath: manifestPath, file: file), in: unet)
        return (unet, manifest)
    }

    /// Level 4: runs the attention modules named (by the prefix of their `to_q`) in FP8, rounding the softmax
    /// probabilities with the module's amax in `probabilityAmax` (1 where it has none).
    package static func enableFP8Attention(_ modules: [String], probabilityAmax: [String: Float] = [:], in unet: UNet2DConditionModel) {
        let fp8 = Set(modules)
        for attention in Quantizer.attentionModules(unet) {
            let prefix = String(attention.query.name.dropLast(".to_q".count))
            guard fp8.contains(prefix) else { continue }
            attention.usesFP8Attention = true
            attention.fp8ProbabilityAmax = probabilityAmax[prefix] ?? 1
        }
    }

    /// The `<module>.probability_amax` tensors of a level-4 folder: one value in (0, 1] each, only for modules the
    /// manifest runs in FP8.
    static func probabilityAmax(manifest: QuantizationManifest, manifestPath: String, file: SafetensorsFile) throws -> [String: Float] {
        let fp8 = Set(manifest.fp8AttentionModules)
        var result: [String: Float] = [:]
        for name in file.tensorNames where name.hasSuffix(probabilityAmaxSuffix) {
            let module = String(name.dropLast(probabilityAmaxSuffix.count))
            guard fp8.contains(module) else {
                throw QuantizationError("\(file.path): tensor '\(name)' belongs to no FP8 attention module of \(manifestPath) (fp8_attention_modules); the folder is damaged, re-run diffuse8 quantize")
            }
            let entry = try file.entry(named: name)
            guard entry.shape == [1] else {
                throw QuantizationError("\(file.path): tensor '\(name)' has shape \(entry.shape), expected [1]")
            }
            let amax = try file.tensor(named: name).scalars[0]
            guard amax.isFinite, amax > 0, amax <= 1 else {
                throw QuantizationError("\(file.path): tensor '\(name)' holds \(amax); a softmax probability amax must lie in (0, 1]")
            }
            result[module] = amax
        }
        return result
    }
}

extension QuantizedModelFolder {
    /// A quantizable layer of the model a quantized folder is loaded into.
    struct LayerSlot {
        let name: String
        let kind: QuantizedLayer.Kind
        let inputChannels: Int
    }

    /// Reads and checks the quantized layers that `manifest` lists, for a model with layers `slots`: each must be
    /// one of them; codes of the recipe's format, rank ≥ 2; weight scales, input/output amax and smoothing factors
    /// finite and above 0, of the right length. Errors name the file and the tensor.
    static func quantizedLayers(manifest: QuantizationManifest, manifestPath: String, store: DequantizingStore,
                                slots: [LayerSlot]) throws -> [String: QuantizedLayer] {
        let file = store.file
        let weightsPath = file.path
        let byName = Dictionary(slots.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        if let unknown = manifest.quantizedLayers.first(where: { byName[$0] == nil }) {
            throw QuantizationError("\(manifestPath): quantized_layers names '\(unknown)', which is not a Conv2d or Linear layer of this UNet; the folder is damaged, re-run diffuse8 quantize")
        }
        /// A tensor of scale-like values: `count` of them, each finite and above 0; nil when absent.
        func positive(_ name: String, count: Int) throws -> [Float]? {
            guard let entry = file.entries[name] else { return nil }
            guard entry.shape == [count] else {
                throw QuantizationError("\(weightsPath): tensor '\(name)' has shape \(entry.shape), expected [\(count)]")
            }
            let values = try file.tensor(named: name).scalars
            if let bad = values.first(where: { !($0.isFinite && $0 > 0) }) {
                throw QuantizationError("\(weightsPath): tensor '\(name)' holds \(bad); scales, amax and smoothing factors must be finite and above 0")
            }
            return values
        }
        var layers: [String: QuantizedLayer] = [:]
        for name in manifest.quantizedLayers where layers[name] == nil {
            let slot = byName[name]!
            let weight = try store.quantizedWeight(name + ".weight")
            guard weight.shape.count >= 2, weight.shape[1] == slot.inputChannels else {
                throw QuantizationError("\(weightsPath): tensor '\(name).weight' has shape \(weight.shape); the layer has \(slot.inputChannels) input channels")
            }
            let smoothing = try positive(name + ".smooth_scale", count: slot.inputChannels)
            if smoothing != nil && slot.kind != .linear {
                throw QuantizationError("\(weightsPath): tensor '\(name).smooth_scale' belongs to a Conv2d layer; only Linear layers are smoothed")
            }
            layers[name] = QuantizedLayer(name: name, kind: slot.kind, weight: weight, inputAmax: try positive(name + ".input_amax", count: 1)?[0],
                                          smoothing: smoothing, outputAmax: try positive(name + ".output_amax", count: 1)?[0])
        }
        return layers
    }
}

/// Presents a quantized UNet weight file as a plain one: quantized weights come out dequantized
/// (codes × scale, smoothing already absorbed), the extra scale/amax tensors are hidden.
final class DequantizingStore: TensorStore {
    let file: SafetensorsFile
    let format: QuantizedFormat
    let tensorNames: [String]
    /// Quantized weights the caller packs itself: served as shape-only FP32 tensors whose storage is never written
    /// (nor read), so the model is built without an FP32 copy of them.
    let placeholders: Set<String>

    init(file: SafetensorsFile, format: QuantizedFormat, placeholders: Set<String> = []) {
        self.file = file
        self.format = format
        self.placeholders = placeholders
        tensorNames = file.tensorNames.filter { name in !QuantizedModelFolder.extraSuffixes.contains { name.hasSuffix($0) } }
    }

    func quantizedWeight(_ name: String) throws -> QuantizedWeight {
        let entry = try file.entry(named: name)
        guard entry.shape.count >= 2 else {
            throw QuantizationError("\(file.path): tensor '\(name)' has shape \(entry.shape); a quantized weight is [out, in] or [out, in, k, k]")
        }
        guard entry.dtype == format.storageDType else {
            throw QuantizationError("\(file.path): \(name) is \(entry.dtype), expected \(format.storageDType) codes for a \(format) model")
        }
        let base = String(name.dropLast(".weight".count))
        let scales = try file.tensor(named: base + ".weight_scale").scalars
        guard scales.count == 1 || scales.count == entry.shape[0] else {
            throw QuantizationError("\(file.path): \(base).weight_scale has \(scales.count) values for \(entry.shape[0]) output channels")
        }
        if let bad = scales.first(where: { !($0.isFinite && $0 > 0) }) {
            throw QuantizationError("\(file.path): tensor '\(base).weight_scale' holds \(bad); weight scales must be finite and above 0")
        }
        return QuantizedWeight(format: format, shape: entry.shape, codes: Array(try file.rawBytes(named: name)), scales: scales)
    }

    func tensor(named name: String) throws -> Tensor {
        let entry = try file.entry(named: name)
        if placeholders.contains(name) && entry.dtype == format.storageDType && entry.shape.count >= 2 {
            return Tensor(shape: entry.shape) { _ in }
        }
        if entry.dtype == .i8 || entry.dtype == .f8E4M3 { return try quantizedWeight(name).dequantized() }
        return try file.tensor(named: name)
    }
}

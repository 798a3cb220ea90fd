import Diffuse8
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// What `export-onnx` writes: the opset, the float type of activations and weights, and whether the weights go to
/// an external data file (`<model>.data`; always when they exceed protobuf's 2 GB limit).
public struct ONNXExportOptions: Sendable {
    public enum Precision: String, Sendable, CaseIterable {
        case fp32, fp16
    }

    /// 19 or 20 (FP8 Q/DQ needs ≥ 19).
    public var opset = 19
    public var precision = Precision.fp32
    /// true: external data file whatever the size; false: only when the weights do not fit in one protobuf.
    public var externalData = false

    public init() {}

    public static let supportedOpsets = [19, 20]
}

/// What was written.
public struct ONNXExportSummary: Sendable {
    public let path: String
    /// The external data file, when one was written.
    public let externalDataPath: String?
    public let nodes: Int
    public let initializers: Int
    public let initializerBytes: Int
    /// Q/DQ pairs by kind ("conv2d weight", "linear input", "attention", …); empty for a plain export.
    public let qdqPairs: [String: Int]
    /// The quantization recipe's format and level, nil for a plain export.
    public let quantization: (format: QuantizedFormat, level: QuantizationLevel)?
}

/// `diffuse8 export-onnx`: the UNet of a diffusers folder as an ONNX graph (plain), or of a folder written by
/// `quantize` with the Q/DQ nodes of its recipe. The graph is recorded by running the model's own forward on
/// `ONNXRecordingBackend`.
///
/// Graph inputs: `sample` [batch, C, height, width], `timestep` [batch] (FP32), `encoder_hidden_states`
/// [batch, sequence, cross_attention_dim]; SDXL (`addition_embed_type: text_time`) adds `text_embeds` [batch, width]
/// and `time_ids` [batch, 6] (FP32). Output `out_sample` [batch, C, height, width].
public enum ONNXUNetExporter {
    /// Time ids of SDXL's micro-conditioning (original size, crop, target size), as the pipeline passes them.
    static let timeIdCount = 6
    /// Protobuf messages are limited to 2 GB; weights above this go to an external data file.
    static let inlineLimit = 1_900_000_000

    /// Loads `modelDirectory`'s UNet (plain or quantized), records its graph and writes it to `output`.
    /// Nothing is written when the folder's recipe cannot be expressed; files appear only once complete.
    public static func export(modelDirectory: String, to output: String, options: ONNXExportOptions = ONNXExportOptions()) throws -> ONNXExportSummary {
        guard ONNXExportOptions.supportedOpsets.contains(options.opset) else {
            throw ONNXExportError("opset \(options.opset) is not supported; use 19 or 20")
        }
        let unetDirectory = try unetFolder(modelDirectory)
        let unet: UNet2DConditionModel
        var recipe: (QuantizedFormat, QuantizationLevel)?
        if let manifest = try QuantizedModelFolder.manifest(unetDirectory: unetDirectory) {
            if manifest.dynamic {
                throw ONNXExportError("\(unetDirectory)/\(QuantizedModelFolder.manifestName): \"dynamic\": true — per-token activation scales computed at run time cannot be written as static Q/DQ nodes; quantize with calibration statistics (--stats) to export")
            }
            unet = try QuantizedModelFolder.loadQuantizedUNet(directory: unetDirectory).0
            recipe = (manifest.format, manifest.level)
        } else {
            unet = try UNet2DConditionModel.load(directory: unetDirectory)
        }
        let graph = try record(unet, options: options)
        let external = options.externalData || graph.builder.initializerBytes > inlineLimit
        let dataPath = try ONNXModelWriter.write(graph.builder, opset: options.opset, to: output, externalData: external,
                                                 metadata: ["diffuse8.source": modelDirectory,
                                                            "diffuse8.quantization": recipe.map { "\($0.0.rawValue) level \($0.1.rawValue)" } ?? "none"])
        return ONNXExportSummary(path: output, externalDataPath: dataPath, nodes: graph.builder.nodes.count,
                                 initializers: graph.builder.initializers.count, initializerBytes: graph.builder.initializerBytes,
                                 qdqPairs: graph.quantization.pairs, quantization: recipe)
    }

    /// The `unet` folder of a diffusers folder, or `directory` itself when it is a UNet folder (config.json).
    public static func unetFolder(_ directory: String) throws -> String {
        let fm = FileManager.default
        if fm.fileExists(atPath: directory + "/model_index.json") { return try DiffusersFolder(path: directory).folder(of: "unet") }
        if fm.fileExists(atPath: directory + "/config.json") { return directory }
        throw ONNXExportError("\(directory) is neither a diffusers folder (model_index.json) nor a UNet folder (config.json)")
    }

    /// The graph of `unet` for `options` (nothing written).
    static func record(_ unet: UNet2DConditionModel, options: ONNXExportOptions) throws -> (builder: ONNXGraphBuilder, quantization: ONNXQuantization) {
        let c = unet.configuration
        let floatType: ONNXElementType = options.precision == .fp16 ? .float16 : .float
        let graph = ONNXGraphBuilder(floatType: floatType)
        let quantization = ONNXQuantization(graph: graph)
        let backend = ONNXRecordingBackend(graph: graph, quantization: quantization)

        // Trace sizes: batch 2, sequence 7, and a latent whose every level has its own (height, width) pair.
        let levels = 1 << (c.blockOutChannels.count - 1)
        let (batch, height, width, sequence) = (2, 5 * levels, 3 * levels, 7)
        let dims = ONNXGraphBuilder.Dimension.self
        graph.addInput("sample", type: floatType, dims: [dims.named("batch"), .fixed(c.inChannels), .named("height"), .named("width")])
        graph.addInput("timestep", type: .float, dims: [.named("batch")])
        graph.addInput("encoder_hidden_states", type: floatType, dims: [.named("batch"), .named("sequence"), .fixed(c.crossAttentionDim[0])])
        let sample = backend.value("sample", [batch, c.inChannels, height, width])
        let context = ONNXValue(name: "encoder_hidden_states", shape: [batch, sequence, c.crossAttentionDim[0]])
        let time = sinusoid("timestep", unet.timeProjection, graph: graph, batch: batch)

        var textEmbeds: ONNXValue?, timeIdFeatures: ONNXValue?
        if let projection = unet.additionTimeProjection, let inputWidth = c.projectionClassEmbeddingsInputDim {
            let textWidth = inputWidth - timeIdCount * projection.channels
            guard textWidth > 0 else {
                throw ONNXExportError("UNet config: projection_class_embeddings_input_dim \(inputWidth) leaves no text_embeds width next to \(timeIdCount) time ids × \(projection.channels)")
            }
            graph.addInput("text_embeds", type: floatType, dims: [.named("batch"), .fixed(textWidth)])
            graph.addInput("time_ids", type: .float, dims: [.named("batch"), .fixed(timeIdCount)])
            textEmbeds = ONNXValue(name: "text_embeds", shape: [batch, textWidth])
            let flat = graph.op("Reshape", ["time_ids", graph.int64Constant([-1])], scope: "add_time_proj")
            let features = sinusoid(flat, projection, graph: graph, batch: batch * timeIdCount)
            let rows = graph.op("Reshape", [features.name, graph.int64Constant([-1, Int64(timeIdCount * projection.channels)])],
                                scope: "add_time_proj")
            timeIdFeatures = ONNXValue(name: rows, shape: [batch, timeIdCount * projection.channels])
        }
        let y = try unet.forward(backend, sample: sample, timeFeatures: time, timeIdFeatures: timeIdFeatures,
                                 encoderHiddenStates: context, textEmbeds: textEmbeds)
        graph.node("Identity", [y.name], scope: "unet", label: "Output")
        graph.renameLastOutput(to: "out_sample")
        graph.addOutput("out_sample", type: floatType, dims: [.named("batch"), .fixed(c.outChannels), .named("height"), .named("width")])
        return (graph, quantization)
    }

    /// diffusers' `Timesteps` on a 1-D FP32 tensor: [M] → [M, channels] ([sin, cos], or [cos, sin] with
    /// flip_sin_to_cos), in FP32 with the frequencies the Swift model uses, then cast to the graph's float type.
    static func sinusoid(_ input: String, _ p: SinusoidalTimestepProjection, graph: ONNXGraphBuilder, batch: Int) -> ONNXValue {
        let half = p.channels / 2
        let logPeriod = Float(-log(10000.0))
        let frequencies = (0..<half).map { expf(logPeriod * Float($0) / (Float(half) - p.downscaleFreqShift)) }
        let scope = input == "timestep" ? "time_proj" : "add_time_proj"
        let column = graph.op("Unsqueeze", [input, graph.int64Constant([1])], scope: scope)
        let angles = graph.op("Mul", [column, graph.floatConstant(frequencies, dims: [1, half], type: .float)], scope: scope)
        let sin = graph.op("Sin", [angles], scope: scope), cos = graph.op("Cos", [angles], scope: scope)
        var parts = p.flipSinToCos ? [cos, sin] : [sin, cos]
        if p.channels % 2 == 1 {
            let zero = graph.op("Mul", [graph.op("Slice", [angles, graph.int64Constant([0]), graph.int64Constant([1]), graph.int64Constant([1])], scope: scope),
                                        graph.floatConstant([0], dims: [], type: .float)], scope: scope)
            parts.append(zero)
        }
        var y = graph.op("Concat", parts, scope: scope, attributes: [ONNXAttribute.int("axis", 1)])
        if graph.floatType != .float {
            y = graph.op("Cast", [y], scope: scope, attributes: [ONNXAttribute.int("to", graph.floatType.rawValue)])
        }
        return ONNXValue(name: y, shape: [batch, p.channels])
    }
}

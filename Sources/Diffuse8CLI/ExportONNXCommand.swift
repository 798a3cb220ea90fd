import ArgumentParser
import Diffuse8
import Diffuse8ONNX

struct ExportONNXCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-onnx",
        abstract: "Export a model's UNet as ONNX: a plain graph, or Q/DQ nodes for a folder written by `quantize`.",
        discussion: """
        The graph has inputs sample [batch, C, height, width], timestep [batch] (float32) and encoder_hidden_states
        [batch, sequence, width] (SDXL adds text_embeds and time_ids [batch, 6]), output out_sample; batch, height,
        width and sequence are dynamic. Node and initializer names keep diffusers' module names. Quantized folders
        get TensorRT-style Q/DQ nodes (docs/ONNX.md). Weights above 2 GB go to an external data file <output>.data.
        """)

    @Argument(help: "A diffusers model folder (or a folder written by `diffuse8 quantize`).")
    var model: String

    @Option(name: .shortAndLong, help: "The ONNX file to write.")
    var output: String?

    @Option(name: .long, help: "ONNX opset: 19 or 20.")
    var opset: Int = 19

    @Option(name: .long, help: "Float type of weights and activations: fp32 or fp16.")
    var precision: String = "fp32"

    @Flag(name: .long, help: "Write the weights to <output>.data even when they fit in the model file.")
    var externalData = false

    func options() throws -> ONNXExportOptions {
        var o = ONNXExportOptions()
        guard ONNXExportOptions.supportedOpsets.contains(opset) else {
            throw ValidationError("--opset \(opset) is not supported; choose 19 or 20")
        }
        guard let p = ONNXExportOptions.Precision(rawValue: precision.lowercased()) else {
            throw ValidationError("unknown --precision '\(precision)'; choose fp32 or fp16")
        }
        o.opset = opset
        o.precision = p
        o.externalData = externalData
        return o
    }

    @Flag(name: .long, help: "Write nothing; print the Q/DQ pairs each quantization level and format puts into this UNet's export, as a Markdown table.")
    var countQdq = false

    func validate() throws {
        _ = try options()
        if output == nil && !countQdq { throw ValidationError("give the ONNX file to write with -o FILE") }
    }

    func run() throws {
        if countQdq { return try printQDQCounts() }
        guard let output else { return }
        let summary = try ONNXUNetExporter.export(modelDirectory: model, to: output, options: try options())
        var line = "\(summary.path): \(summary.nodes) nodes, \(summary.initializers) initializers (\(summary.initializerBytes / 1_000_000) MB)"
        if let data = summary.externalDataPath { line += ", weights in \(data)" }
        if let q = summary.quantization {
            let pairs = summary.qdqPairs.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
            line += "; \(q.format.rawValue) level \(q.level.rawValue) Q/DQ pairs: \(pairs)"
        }
        print(line)
    }

    /// One row per format and level, one column per kind of Q/DQ pair.
    func printQDQCounts() throws {
        let unet = try UNet2DConditionModel.load(directory: try ONNXUNetExporter.unetFolder(model))
        var rows: [(String, [String: Int])] = []
        for format in QuantizedFormat.allCases {
            for level in QuantizationLevel.allCases where level != .fp8Attention || format == .fp8 {
                rows.append(("\(format.rawValue) | \(level.rawValue)", try ONNXUNetExporter.qdqPairCounts(unet, level: level, format: format, options: try options())))
            }
        }
        let kinds = ["conv2d weight", "conv2d input", "linear weight", "linear input", "attention Q/K/V", "attention softmax"]
        print("| format | level | " + kinds.joined(separator: " | ") + " | total |")
        print("|---|---|" + String(repeating: "---:|", count: kinds.count + 1))
        for (label, counts) in rows {
            print("| \(label) | " + kinds.map { String(counts[$0] ?? 0) }.joined(separator: " | ") + " | \(counts.values.reduce(0, +)) |")
        }
    }
}

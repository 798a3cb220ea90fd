import Diffuse8
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The element types the exporter writes (ONNX `TensorProto.DataType` codes).
public enum ONNXElementType: Int, Sendable {
    case float = 1
    case int8 = 3
    case int64 = 7
    case float16 = 10
    case float8E4M3FN = 17

    /// Bytes per element.
    var size: Int {
        switch self {
        case .float: return 4
        case .int8, .float8E4M3FN: return 1
        case .int64: return 8
        case .float16: return 2
        }
    }

    var proto: Onnx_TensorProto.DataType { Onnx_TensorProto.DataType(rawValue: rawValue) ?? .undefined }
}

/// An initializer's data, kept by reference until the model is written (a model's weights are not copied into the
/// graph: they are converted and written tensor by tensor, see `ONNXModelWriter`).
enum ONNXInitializerData {
    /// Float values written as the given float type (FP32 or FP16).
    case floats([Float], ONNXElementType)
    case int64([Int64])
    /// All-zero values of an 8-bit type (quantization zero points).
    case zeros(Int, ONNXElementType)

    var elementType: ONNXElementType {
        switch self {
        case .floats(_, let type), .zeros(_, let type): return type
        case .int64: return .int64
        }
    }

    var count: Int {
        switch self {
        case .floats(let v, _): return v.count
        case .int64(let v): return v.count
        case .zeros(let n, _): return n
        }
    }

    var byteCount: Int { count * elementType.size }

    /// Calls `body` with the little-endian bytes of elements `range`.
    func withBytes(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        switch self {
        case .floats(let v, .float16):
            let bits = v[range].map { Float16($0).bitPattern }
            try bits.withUnsafeBytes(body)
        case .floats(let v, _):
            try v[range].withUnsafeBytes(body)
        case .int64(let v):
            try v[range].withUnsafeBytes(body)
        case .zeros:
            try [UInt8](repeating: 0, count: range.count * elementType.size).withUnsafeBytes(body)
        }
    }
}

struct ONNXInitializer {
    let name: String
    let dims: [Int]
    let data: ONNXInitializerData
}

/// A graph under construction: nodes in execution order, initializers, inputs and outputs. Names follow the
/// PyTorch exporter's convention: a node is `/<module path>/<Op>`, its output `<node>_output_0`, and initializers
/// keep the diffusers state-dict names (`down_blocks.0.resnets.0.conv1.weight`).
final class ONNXGraphBuilder {
    /// The graph's float type: every activation, weight and quantization scale has it.
    let floatType: ONNXElementType
    private(set) var nodes: [Onnx_NodeProto] = []
    private(set) var initializers: [ONNXInitializer] = []
    private(set) var inputs: [Onnx_ValueInfoProto] = []
    private(set) var outputs: [Onnx_ValueInfoProto] = []
    private var initializerNames: Set<String> = []
    private var nodeNames: [String: Int] = [:]
    private var constants: [String: String] = [:]

    init(floatType: ONNXElementType) {
        self.floatType = floatType
    }

    /// A dimension: a fixed size or a named (dynamic) axis.
    enum Dimension {
        case fixed(Int)
        case named(String)
    }

    func addInput(_ name: String, type: ONNXElementType, dims: [Dimension]) {
        inputs.append(Self.valueInfo(name, type: type, dims: dims))
    }

    func addOutput(_ name: String, type: ONNXElementType, dims: [Dimension]) {
        outputs.append(Self.valueInfo(name, type: type, dims: dims))
    }

    private static func valueInfo(_ name: String, type: ONNXElementType, dims: [Dimension]) -> Onnx_ValueInfoProto {
        var info = Onnx_ValueInfoProto()
        info.name = name
        var tensor = Onnx_TypeProto.Tensor()
        tensor.elemType = Int32(type.rawValue)
        var shape = Onnx_TensorShapeProto()
        shape.dim = dims.map { d in
            var dim = Onnx_TensorShapeProto.Dimension()
            switch d {
            case .fixed(let n): dim.dimValue = Int64(n)
            case .named(let s): dim.dimParam = s
            }
            return dim
        }
        tensor.shape = shape
        info.type.tensorType = tensor
        return info
    }

    // MARK: Nodes

    /// Appends a node `op` named `/<scope>/<op>` (made unique with a counter) and returns its output names.
    @discardableResult
    func node(_ op: String, _ inputs: [String], scope: String, outputs count: Int = 1,
              attributes: [Onnx_AttributeProto] = [], label: String? = nil) -> [String] {
        var base = "/" + scope.split(separator: ".").joined(separator: "/") + "/" + (label ?? op)
        if let n = nodeNames[base] {
            nodeNames[base] = n + 1
            base += "_\(n)"
        } else {
            nodeNames[base] = 1
        }
        var node = Onnx_NodeProto()
        node.opType = op
        node.name = base
        node.input = inputs
        node.output = (0..<count).map { "\(base)_output_\($0)" }
        node.attribute = attributes
        nodes.append(node)
        return node.output
    }

    /// One-output form of `node`.
    func op(_ op: String, _ inputs: [String], scope: String, attributes: [Onnx_AttributeProto] = [], label: String? = nil) -> String {
        node(op, inputs, scope: scope, attributes: attributes, label: label)[0]
    }

    /// Renames the last node's first output (the graph's output name).
    func renameLastOutput(to name: String) {
        nodes[nodes.count - 1].output[0] = name
    }

    // MARK: Initializers

    /// Adds an initializer; `name` must be new (model weights have unique state-dict names).
    func initializer(_ name: String, dims: [Int], data: ONNXInitializerData) -> String {
        precondition(!initializerNames.contains(name), "duplicate initializer \(name)")
        precondition(dims.reduce(1, *) == data.count, "initializer \(name): dims \(dims) for \(data.count) values")
        initializerNames.insert(name)
        initializers.append(ONNXInitializer(name: name, dims: dims, data: data))
        return name
    }

    /// A shared int64 constant (shapes, axes, pads), created once per value.
    func int64Constant(_ values: [Int64], scalar: Bool = false) -> String {
        let key = "i64\(scalar ? "s" : "")" + values.map(String.init).joined(separator: "_")
        if let name = constants[key] { return name }
        let name = initializer("const_int64_\(constants.count)", dims: scalar ? [] : [values.count], data: .int64(values))
        constants[key] = name
        return name
    }

    /// A shared float constant in the graph's float type (or `type`), created once per value and shape.
    func floatConstant(_ values: [Float], dims: [Int], type: ONNXElementType? = nil) -> String {
        let t = type ?? floatType
        let key = "f\(t.rawValue)_\(dims)_" + values.map { String($0.bitPattern) }.joined(separator: "_")
        if let name = constants[key] { return name }
        let name = initializer("const_float_\(constants.count)", dims: dims, data: .floats(values, t))
        constants[key] = name
        return name
    }

    var initializerBytes: Int { initializers.reduce(0) { $0 + $1.data.byteCount } }
}

/// Attribute constructors.
enum ONNXAttribute {
    static func int(_ name: String, _ value: Int) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .int
        a.i = Int64(value)
        return a
    }

    static func ints(_ name: String, _ values: [Int]) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .ints
        a.ints = values.map(Int64.init)
        return a
    }

    static func float(_ name: String, _ value: Float) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .float
        a.f = value
        return a
    }

    static func string(_ name: String, _ value: String) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .string
        a.s = Data(value.utf8)
        return a
    }
}

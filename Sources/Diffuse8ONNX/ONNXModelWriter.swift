import Diffuse8
import SwiftProtobuf
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Serialises a recorded graph as an ONNX `ModelProto`. With external data, the initializers' bytes are streamed
/// tensor by tensor (converted in chunks) into `<model file>.data` next to the model and the model holds only their
/// locations, so memory stays bounded by the weights already loaded plus one chunk. Both files are written to
/// temporary names and renamed when complete.
enum ONNXModelWriter {
    /// Elements converted per write.
    static let chunk = 1 << 20
    /// Tensors of at least this many bytes start at a page-aligned offset (so runtimes can map them).
    static let alignedTensorBytes = 1 << 20

    /// Initializers smaller than this stay in the model file (shape constants must be readable by shape inference).
    static let externalMinimumBytes = 1024

    /// IR version 9 covers opsets 19 and 20.
    static let irVersion: Int64 = 9

    /// Writes the model; returns the external data file's path when one was written.
    @discardableResult
    static func write(_ graph: ONNXGraphBuilder, opset: Int, to path: String, externalData: Bool,
                      metadata: [String: String]) throws -> String? {
        var model = Onnx_ModelProto()
        model.irVersion = irVersion
        model.producerName = "diffuse8"
        model.producerVersion = QuantizedModelFolder.toolVersion
        var opsetID = Onnx_OperatorSetIdProto()
        opsetID.domain = ""
        opsetID.version = Int64(opset)
        model.opsetImport = [opsetID]
        model.metadataProps = metadata.sorted { $0.key < $1.key }.map { entry in
            var p = Onnx_StringStringEntryProto()
            p.key = entry.key
            p.value = entry.value
            return p
        }
        var g = Onnx_GraphProto()
        g.name = "unet"
        g.node = graph.nodes
        g.input = graph.inputs
        g.output = graph.outputs

        let slash = path.lastIndex(of: "/")
        let dataName = String(path[(slash.map { path.index(after: $0) } ?? path.startIndex)...]) + ".data"
        let dataPath = slash.map { String(path[..<$0]) + "/" + dataName } ?? dataName
        var offsets: [Int] = []
        if externalData {
            try AtomicFileWriter.write(to: dataPath) { sink in
                var offset = 0
                for initializer in graph.initializers {
                    guard initializer.data.byteCount >= externalMinimumBytes else {
                        offsets.append(-1)
                        continue
                    }
                    if initializer.data.byteCount >= alignedTensorBytes, offset % 4096 != 0 {
                        let padding = 4096 - offset % 4096
                        try sink.write([UInt8](repeating: 0, count: padding))
                        offset += padding
                    }
                    offsets.append(offset)
                    for start in stride(from: 0, to: initializer.data.count, by: chunk) {
                        try initializer.data.withBytes(start..<min(start + chunk, initializer.data.count)) { try sink.write($0) }
                    }
                    offset += initializer.data.byteCount
                }
            }
        }
        do {
            g.initializer = graph.initializers.enumerated().map { i, initializer in
                var t = Onnx_TensorProto()
                t.name = initializer.name
                t.dims = initializer.dims.map(Int64.init)
                t.dataType = Int32(initializer.data.elementType.rawValue)
                if externalData && offsets[i] >= 0 {
                    t.dataLocation = .external
                    t.externalData = [("location", dataName), ("offset", String(offsets[i])), ("length", String(initializer.data.byteCount))].map {
                        var e = Onnx_StringStringEntryProto()
                        e.key = $0.0
                        e.value = $0.1
                        return e
                    }
                } else {
                    var bytes = Data(capacity: initializer.data.byteCount)
                    initializer.data.withBytes(0..<initializer.data.count) { bytes.append(contentsOf: $0) }
                    t.rawData = bytes
                }
                return t
            }
            model.graph = g
            let serialized: [UInt8] = try model.serializedBytes()
            try AtomicFileWriter.write(serialized, to: path)
        } catch {
            if externalData { try? FileManager.default.removeItem(atPath: dataPath) }
            throw error
        }
        return externalData ? dataPath : nil
    }
}

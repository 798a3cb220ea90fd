/// What a diffusers folder holds, per component: class, parameter count and stored dtypes
/// (for `diffuse8 inspect`). Made by `DiffusersFolder.summary()`.
public struct ModelSummary: Sendable, CustomStringConvertible {
    public struct Component: Sendable {
        public let name: String
        public let library: String
        public let className: String
        /// Elements stored in the weight files (equals `sum(p.numel() for p in model.parameters())`
        /// when, as in diffusers' own files, no buffers are saved); nil for components without weights.
        public let parameterCount: Int?
        /// Bytes of tensor data; nil for components without weights.
        public let byteCount: Int?
        /// Dtypes present in the weights, sorted by name.
        public let dtypes: [SafetensorsDType]
        public let weightFiles: [String]
    }

    public let path: String
    public let pipelineClass: String
    public let family: ModelFamily
    public let components: [Component]

    /// Parameters over all components.
    public var totalParameterCount: Int { components.compactMap(\.parameterCount).reduce(0, +) }

    /// A small table, one line per component.
    public var description: String {
        var lines = ["\(path): \(pipelineClass) (\(family)), \(Self.grouped(totalParameterCount)) parameters"]
        for c in components {
            var line = "  \(c.name): \(c.library) \(c.className)"
            if let count = c.parameterCount {
                line += ", \(Self.grouped(count)) parameters, \(c.dtypes.map(\.rawValue).joined(separator: "/"))"
                if let bytes = c.byteCount { line += ", \(Self.grouped(bytes)) bytes" }
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    private static func grouped(_ n: Int) -> String {
        var digits = Array(String(n))
        var index = digits.count - 3
        while index > 0 { digits.insert(",", at: index); index -= 3 }
        return String(digits)
    }
}

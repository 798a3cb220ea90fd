extension SingleFileCheckpoint {
    /// What the file holds, per component, listed under the component names and classes of the family's reference
    /// configurations (for `diffuse8 inspect FILE`): parameter counts, bytes and stored dtypes of each component's keys
    /// (EMA copies and DDPM buffers left out); components without weights (tokenizers, scheduler) come from the
    /// reference folder.
    public func summary() throws -> ModelSummary {
        let folder = try DiffusersFolder(path: try ReferenceConfigurations.folder(for: family))
        var prefixes = ["unet": Self.unetPrefix, "vae": Self.vaePrefix]
        for (index, encoder) in textEncoderPrefixes.enumerated() { prefixes[index == 0 ? "text_encoder" : "text_encoder_2"] = encoder.prefix }
        var rows: [ModelSummary.Component] = []
        for name in folder.componentNames {
            let component = try folder.component(name)
            guard let prefix = prefixes[name] else {
                rows.append(ModelSummary.Component(name: name, library: component.library, className: component.className,
                                                   parameterCount: nil, byteCount: nil, dtypes: [], weightFiles: []))
                continue
            }
            var count = 0, bytes = 0
            var dtypes: Set<SafetensorsDType> = []
            for key in file.tensorNames where key.hasPrefix(prefix) && !Self.isIgnored(key) {
                let entry = try file.entry(named: key)
                count += entry.elementCount
                bytes += entry.byteCount
                dtypes.insert(entry.dtype)
            }
            rows.append(ModelSummary.Component(name: name, library: component.library, className: component.className,
                                               parameterCount: count, byteCount: bytes,
                                               dtypes: dtypes.sorted { $0.rawValue < $1.rawValue }, weightFiles: [path]))
        }
        return ModelSummary(path: path, pipelineClass: folder.pipelineClass, family: family, components: rows)
    }
}

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

extension SingleFileCheckpoint {
    /// Writes the checkpoint as a diffusers folder at `output` — what `quantize` starts from when its model is a single
    /// file, since a quantized model is a diffusers folder. The configurations, scheduler and tokenizer settings are
    /// copied from `configurationFolder` (the reference configurations or a `--config` folder); the tokenizer folders
    /// get `vocabulary`'s files when one is given (the vocabulary the pipeline's tokenizers were loaded with), else keep
    /// the folder's own. Weights are written under diffusers names in the type the file
    /// stores them in (F32, F16, BF16; F8_E4M3 as F16, which holds every E4M3 value exactly), one component at a time.
    /// Built under a temporary name and renamed at the end; refuses to overwrite `output`.
    public func writeDiffusersFolder(to output: String, configurationFolder folder: DiffusersFolder, vocabulary: CLIPVocabulary?) throws {
        let fm = FileManager.default
        guard !fm.fileExists(atPath: output) else {
            throw DiffusersFolderError(path: output, "\(output) already exists; remove it or choose another output")
        }
        try AtomicFolderWriter.write(to: output, renameFailure: DiffusersFolderError(path: output, "cannot move the finished folder into place at \(output)")) { temporary in
            try fm.copyItem(atPath: folder.path + "/model_index.json", toPath: temporary + "/model_index.json")
            for name in folder.componentNames {
                let source = try folder.folder(of: name), target = temporary + "/" + name
                try fm.createDirectory(atPath: target, withIntermediateDirectories: true)
                let isTokenizer = try folder.component(name).className.hasSuffix("Tokenizer")
                for file in try fm.contentsOfDirectory(atPath: source) where file.hasSuffix(".json") || file == "merges.txt" {
                    if file.hasSuffix(".safetensors.index.json") { continue }  // weights come from the checkpoint
                    if isTokenizer, vocabulary != nil, file == "vocab.json" || file == "merges.txt" { continue }
                    try fm.copyItem(atPath: source + "/" + file, toPath: target + "/" + file)
                }
                if isTokenizer, let vocabulary {
                    try fm.copyItem(atPath: vocabulary.vocabularyFile, toPath: target + "/vocab.json")
                    try fm.copyItem(atPath: vocabulary.mergesFile, toPath: target + "/merges.txt")
                }
            }
            let unet = try UNetConfiguration(contentsOf: try folder.folder(of: "unet") + "/config.json")
            try write(try unetWeights(layersPerBlock: unet.layersPerBlock), to: temporary + "/unet/diffusion_pytorch_model.safetensors")
            let vae = try VAEConfiguration(directory: try folder.folder(of: "vae"))
            try write(try vaeWeights(blocks: vae.blockOutChannels.count), to: temporary + "/vae/diffusion_pytorch_model.safetensors")
            for index in textEncoderPrefixes.indices {
                try write(try textEncoderWeights(index: index), to: temporary + "/\(index == 0 ? "text_encoder" : "text_encoder_2")/model.safetensors")
            }
        }
    }

    /// One component's weights: tensors used as stored are copied byte for byte; converted ones (transposed, sliced,
    /// or stored as F8_E4M3) are written from their Float32 values in the storage type.
    private func write(_ weights: TensorStore, to path: String) throws {
        guard let mapped = weights as? MappedTensorStore else { throw DiffusersFolderError(path: path, "internal: unexpected weight store") }
        var writer = SafetensorsWriter(metadata: ["format": "pt"])
        for name in mapped.tensorNames {
            let source = mapped.sources[name]!
            let entry = try file.entry(named: source.sourceName)
            let storage: SafetensorsDType = [.f32, .f16, .bf16].contains(entry.dtype) ? entry.dtype : .f16
            switch source {
            case .same(let key) where storage == entry.dtype:
                try writer.add(name, dtype: storage, shape: entry.shape, bytes: Array(try file.rawBytes(named: key)))
            case .reshaped(let key, let shape) where storage == entry.dtype:
                try writer.add(name, dtype: storage, shape: shape, bytes: Array(try file.rawBytes(named: key)))
            default:
                try writer.add(name, try mapped.tensor(named: name), as: storage)
            }
        }
        try writer.write(to: path)
    }
}

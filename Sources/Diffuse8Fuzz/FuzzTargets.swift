// libFuzzer targets for every reader of untrusted files. Built and run by `tools/fuzz.sh` (which passes
// `-sanitize=fuzzer,address -DDIFFUSE8_FUZZ`); a plain `swift build` compiles only the stub at the end.
// `DIFFUSE8_FUZZ_TARGET` picks the reader; a target may throw (the input is refused) but must not crash,
// hang or leak. Seed corpora: Tests/Fuzz/<target>/.
#if DIFFUSE8_FUZZ
#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import Diffuse8
import Diffuse8PNG

/// One fuzz target: consumes an input, ignoring the errors readers throw.
typealias FuzzTarget = ([UInt8]) -> Void

/// The test fixtures (tokenizer, UNet layer table): `DIFFUSE8_FUZZ_FIXTURES`, else `Tests/Fixtures` of the repository
/// this file is in.
let fixtures = ProcessInfo.processInfo.environment["DIFFUSE8_FUZZ_FIXTURES"]
    ?? String(#filePath).components(separatedBy: "/Sources/Diffuse8Fuzz/").first! + "/Tests/Fixtures"
let scratchFile = "/tmp/diffuse8-fuzz-\(getpid())"

/// safetensors: header validation, then every tensor converted.
func safetensors(_ data: [UInt8]) {
    guard let file = try? SafetensorsFile(bytes: data, name: "input") else { return }
    for name in file.tensorNames { _ = try? file.tensor(named: name) }
}

/// JSON configurations: the UNet, VAE and text-encoder readers and the four schedulers (steps from byte 0).
func configs(_ data: [UInt8]) {
    guard let first = data.first, let json = try? JSONDecoder().decode(JSONValue.self, from: Data(data.dropFirst())) else { return }
    _ = try? UNetConfiguration(json: json)
    _ = try? VAEConfiguration(json: json)
    _ = try? CLIPTextConfiguration(json: json)
    let steps = Int(first % 64) + 1
    _ = try? EulerDiscreteScheduler(config: json, steps: steps)
    _ = try? EulerAncestralDiscreteScheduler(config: json, steps: steps)
    _ = try? DDIMScheduler(config: json, steps: steps)
    _ = try? DPMSolverMultistepScheduler(config: json, steps: steps)
}

/// The tokenizer of the test fixtures, loaded once.
let fixtureTokenizer = try! CLIPTokenizer(directory: fixtures + "/tiny-sd15/tokenizer")

/// Tokenizer: byte 0 even → the input is a prompt for the fixture tokenizer (encode, tokenize, decode); odd →
/// `vocab.json` and `merges.txt` separated by a NUL byte, then a prompt after a second NUL.
func tokenizer(_ data: [UInt8]) {
    guard let first = data.first else { return }
    let rest = Array(data.dropFirst())
    if first % 2 == 0 {
        let prompt = String(decoding: rest, as: UTF8.self)
        let ids = fixtureTokenizer.tokenize(prompt).ids
        _ = fixtureTokenizer.decode(ids, skipSpecial: first % 4 == 0)
        return
    }
    let parts = rest.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count >= 2, let vocabulary = try? JSONDecoder().decode([String: Int].self, from: Data(parts[0])) else { return }
    guard let t = try? CLIPTokenizer(vocabulary: vocabulary, mergesText: String(decoding: parts[1], as: UTF8.self),
                                     configuration: try! CLIPTokenizerConfiguration(directory: nil), source: "merges") else { return }
    let ids = t.tokenize(parts.count > 2 ? String(decoding: parts[2], as: UTF8.self) : "a photo").ids
    _ = t.decode(ids)
}

/// Calibration statistics (`.d8s`): the reader, then merging the result with itself as another shard.
func statistics(_ data: [UInt8]) {
    guard FileManager.default.createFile(atPath: scratchFile, contents: Data(data)) else { return }
    guard let s = try? CalibrationStatisticsFile.read(scratchFile) else { return }
    var other = s
    other.provenance.shards = s.provenance.shards.map { $0 + 1 }
    other.provenance.shardCount = s.provenance.shardCount + 1
    var base = s
    base.provenance.shardCount = other.provenance.shardCount
    _ = try? CalibrationStatistics.merge([base, other])
}

/// PNG decoder.
func png(_ data: [UInt8]) {
    _ = try? PNGDecoder.decode(data)
}

/// The layer table of the fixture UNet, for the quantized-folder target.
let fixtureSlots: [QuantizedModelFolder.LayerSlot] = {
    let unet = try! UNet2DConditionModel.load(directory: fixtures + "/tiny-sd15/unet")
    let inventory = UNetLayerInventory(unet)
    return inventory.convolutions.map { .init(name: $0.name, kind: .conv2d, inputChannels: $0.inChannels) }
        + inventory.linears.map { .init(name: $0.name, kind: .linear, inputChannels: $0.inFeatures) }
}()

/// Quantized folder: a 4-byte little-endian length, that many bytes of `quantization.json`, then the UNet's
/// quantized safetensors; checked against the fixture UNet's layers, every tensor dequantized.
func quantized(_ data: [UInt8]) {
    guard data.count >= 4 else { return }
    let length = Int(data[0]) | Int(data[1]) << 8 | Int(data[2]) << 16 | Int(data[3]) << 24
    guard length <= data.count - 4 else { return }
    let manifestBytes = Array(data[4..<(4 + length)]), weights = Array(data[(4 + length)...])
    guard let manifest = try? JSONDecoder().decode(QuantizationManifest.self, from: Data(manifestBytes)),
          let file = try? SafetensorsFile(bytes: weights, name: "weights") else { return }
    let store = DequantizingStore(file: file, format: manifest.format)
    guard (try? QuantizedModelFolder.quantizedLayers(manifest: manifest, manifestPath: "manifest", store: store, slots: fixtureSlots)) != nil else { return }
    for name in store.tensorNames { _ = try? store.tensor(named: name) }
}

/// Single-file checkpoint and LoRA readers on the same safetensors bytes: family detection, the LDM/SGM key mapping of
/// every component (fixture-sized block counts), every mapped tensor read; LoRA parsing and every module's update.
func checkpoint(_ data: [UInt8]) {
    guard let file = try? SafetensorsFile(bytes: data, name: "input") else { return }
    if let checkpoint = try? SingleFileCheckpoint(file: file) {
        var stores: [TensorStore] = []
        if let s = try? checkpoint.unetWeights(layersPerBlock: [2, 2, 2]) { stores.append(s) }
        if let s = try? checkpoint.vaeWeights(blocks: 4) { stores.append(s) }
        for i in checkpoint.textEncoderPrefixes.indices { if let s = try? checkpoint.textEncoderWeights(index: i) { stores.append(s) } }
        for store in stores { for name in store.tensorNames { _ = try? store.tensor(named: name) } }
    }
    if let lora = try? LoRAFile(file: file) {
        for m in lora.modules where m.down.count / max(m.rank, 1) * m.up.shape[0] <= 1 << 20 {
            _ = try? LoRAFile.delta(m, shape: [m.up.shape[0], m.down.count / max(m.rank, 1)], weight: 0.5)
        }
    }
}

/// Prompt syntax: A1111 emphasis parsing, 75-token chunking with the fixture tokenizer, `<lora:…>` tags.
func prompt(_ data: [UInt8]) {
    let text = String(decoding: data, as: UTF8.self)
    _ = PromptAttention.parse(text)
    _ = PromptChunks(prompt: text, tokenizer: fixtureTokenizer)
    _ = try? LoRAPromptTags.extract(text)
}

let targets: [String: FuzzTarget] = [
    "safetensors": safetensors, "configs": configs, "tokenizer": tokenizer, "statistics": statistics,
    "png": png, "quantized": quantized, "checkpoint": checkpoint, "prompt": prompt,
]

let selected: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["DIFFUSE8_FUZZ_TARGET"] ?? ""
    guard let target = targets[name] else {
        fputs("set DIFFUSE8_FUZZ_TARGET to one of: \(targets.keys.sorted().joined(separator: ", "))\n", stderr)
        exit(2)
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    selected(count == 0 ? [] : Array(UnsafeBufferPointer(start: bytes, count: count)))
    return 0
}

/// libFuzzer's entry for programs that have their own `main`.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links a debug executable's entry point as `<module>_main` (aliased to `main`), which takes the place of
/// libFuzzer's `main`; it hands over to libFuzzer's driver.
@_cdecl("Diffuse8Fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    var count = argc
    var arguments: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return LLVMFuzzerRunDriver(&count, &arguments, fuzzOneInput)
}
#else
@main
struct FuzzStub {
    static func main() {
        print("diffuse8-fuzz: build and run it with tools/fuzz.sh (libFuzzer, address sanitizer)")
    }
}
#endif

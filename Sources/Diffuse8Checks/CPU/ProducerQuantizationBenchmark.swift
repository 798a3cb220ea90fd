import Diffuse8

/// The INT8 input quantization that producers take over on the CPU (`CPUBackend.layerNorm(_:_:readBy:)`,
/// `geglu(_:readBy:)`, `groupNorm(_:_:silu:readBy:)`), timed per piece at one model's shapes: the producer alone, the
/// producer writing the codes too, the real INT8 readers quantizing their input in their own pass, and the same readers
/// on the producer's codes. Saved per call = (readers, own pass − on codes) − (producer with codes − producer alone).
public enum ProducerQuantizationBenchmark {
    /// `tokens` rows of `channels` (LayerNorm → Q/K/V, static scale and shared smoothing; GEGLU of 8 · channels →
    /// ff.net.2), and a GroupNorm+SiLU of [2, channels, side, side] → a 3×3 convolution, static scale.
    public static func run(label: String, channels c: Int, side: Int, iterations: Int) -> [BenchmarkResult] {
        let tokens = 2 * side * side
        let producing = CPUBackend(quantizesInProducers: true), separate = CPUBackend(quantizesInProducers: false)
        var results: [BenchmarkResult] = []
        func measure(_ name: String, _ body: () -> Void) {
            results.append(Benchmark.measure("\(label) \(name)", iterations: iterations, body))
        }
        func linear(_ name: String, in k: Int, out o: Int, smoothing: [Float]?) -> Linear {
            let weight = QuantizedWeight(quantizing: random([o, k], seed: UInt64(k + o)), format: .int8, perChannel: true)
            let layer = Linear(name: name, weight: Tensor(zeros: [0]), bias: random([o], seed: 3))
            CPUInt8LayerHook.install(QuantizedLayer(name: name, kind: .linear, weight: weight, inputAmax: 4, smoothing: smoothing,
                                                    outputAmax: nil), on: layer)
            return layer
        }
        let store = Weights(tensors: ["n.weight": random([c], seed: 4), "n.bias": random([c], seed: 5)])

        // LayerNorm → to_q, to_k, to_v (one input quantization).
        let x = random([2, tokens / 2, c], seed: 1)
        let norm = try! LayerNorm(store, "n", epsilon: 1e-5)
        let smoothing = (0..<c).map { Float(0.5 + Double($0 % 7) * 0.25) }
        let qkv = ["to_q", "to_k", "to_v"].map { linear($0, in: c, out: c, smoothing: smoothing) }
        let normed = separate.layerNorm(x, norm, readBy: qkv), coded = producing.layerNorm(x, norm, readBy: qkv)
        measure("layerNorm \(tokens)x\(c)") { _ = separate.layerNorm(x, norm, readBy: qkv) }
        measure("layerNorm \(tokens)x\(c) + Q/K/V codes") { _ = producing.layerNorm(x, norm, readBy: qkv) }
        measure("int8 Q/K/V, own quantizing passes") { for l in qkv { _ = l(normed) } }
        measure("int8 Q/K/V on the producer's codes") { for l in qkv { _ = l(coded) } }

        // GEGLU → ff.net.2.
        let h = random([2, tokens / 2, 8 * c], seed: 6)
        let out = linear("ff.net.2", in: 4 * c, out: c, smoothing: (0..<(4 * c)).map { Float(0.75 + Double($0 % 5) * 0.125) })
        let activated = separate.geglu(h, readBy: out), activatedCoded = producing.geglu(h, readBy: out)
        measure("geglu \(tokens)x\(8 * c)") { _ = separate.geglu(h, readBy: out) }
        measure("geglu \(tokens)x\(8 * c) + codes") { _ = producing.geglu(h, readBy: out) }
        measure("int8 ff.net.2, own quantizing pass") { _ = out(activated) }
        measure("int8 ff.net.2 on the producer's codes") { _ = out(activatedCoded) }

        // GroupNorm + SiLU → conv 3×3.
        let image = random([2, c, side, side], seed: 7)
        let groupNorm = try! GroupNorm(store, "n", groups: 32, epsilon: 1e-5)
        let w = random([c, c, 3, 3], seed: 8)
        let conv = Conv2d(name: "conv1", weight: w, bias: random([c], seed: 9), stride: 1, padding: 1)
        CPUInt8LayerHook.install(QuantizedLayer(name: "conv1", kind: .conv2d, weight: QuantizedWeight(quantizing: w, format: .int8, perChannel: true),
                                                inputAmax: 4, smoothing: nil, outputAmax: nil), on: conv)
        let g = separate.groupNorm(image, groupNorm, silu: true, readBy: conv), gCoded = producing.groupNorm(image, groupNorm, silu: true, readBy: conv)
        measure("groupNorm+SiLU 2x\(c)x\(side)x\(side)") { _ = separate.groupNorm(image, groupNorm, silu: true, readBy: conv) }
        measure("groupNorm+SiLU 2x\(c)x\(side)x\(side) + codes") { _ = producing.groupNorm(image, groupNorm, silu: true, readBy: conv) }
        measure("int8 conv3x3, own quantizing pass") { _ = conv(g) }
        measure("int8 conv3x3 on the producer's codes") { _ = conv(gCoded) }
        return results
    }

    private static func random(_ shape: [Int], seed: UInt64) -> Tensor {
        var state = seed &* 6364136223846793005 &+ 1442695040888963407
        return Tensor(shape: shape) { p in
            for i in 0..<p.count {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                p[i] = Float(Int32(truncatingIfNeeded: state >> 33)) / Float(Int32.max) * 4
            }
        }
    }

    private struct Weights: TensorStore {
        let tensors: [String: Tensor]
        var tensorNames: [String] { tensors.keys.sorted() }
        func tensor(named name: String) throws -> Tensor { tensors[name]! }
    }
}

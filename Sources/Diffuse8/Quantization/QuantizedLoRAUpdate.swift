#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Applies a LoRA update to one layer of a quantized (simulated) UNet without recalibrating:
///
/// 1. the full-precision weight is re-derived from the stored codes: W = dequantized(W/s) ⊙ s (s the SmoothQuant
///    divisors, 1 where the layer is not smoothed);
/// 2. the update is added: W′ = W + ΔW;
/// 3. SmoothQuant factors are recomputed from W′ with the layer's α and the calibration's per-channel activation
///    amax x_j, which the stored factors still encode: s_j = max|W[:, j]|^(1−α) / x_j^α, so
///    s′_j = s_j · (max|W′[:, j]| / max|W[:, j]|)^(1−α) — the quantizer's formula for W′ and the same x;
/// 4. the input amax becomes max_j x_j·s′_j (what the quantizer computes from the same statistics; x_j recovered as
///    (max|W[:, j]|^(1−α) / s_j)^(1/α), or bounded by input_amax / s_j where s_j was clamped) — unchanged for Conv2d
///    layers, whose input statistics the LoRA does not touch;
/// 5. W′/s′ is quantized with the layer's format and granularity (per-channel when it had one scale per row).
///
/// An update below the stored weight's resolution (`isBelowStoredResolution`) leaves the layer as it is.
public enum QuantizedLoRAUpdate {
    /// The re-derived full-precision weight of `layer`.
    public static func fullPrecisionWeight(_ layer: QuantizedLayer) -> Tensor {
        var w = layer.weight.dequantized()
        if let s = layer.smoothing {
            let columns = w.shape[1]
            for i in w.scalars.indices { w.scalars[i] *= s[i % columns] }
        }
        return w
    }

    /// Layers that read one tensor and were quantized as one (`Quantizer`: attention Q/K/V, cross-attention K/V share
    /// their SmoothQuant factors, input amax and, per-tensor formats, weight scale) re-quantized as one: the factors come
    /// from the column maxima of the stacked merged weights, so the members keep sharing them. Members that do not share
    /// them (a folder quantized layer by layer) are re-quantized one by one. `merged` and `alphas` follow `group`.
    public static func requantized(group: [QuantizedLayer], merged: [Tensor], alphas: [Float?]) -> [QuantizedLayer] {
        guard let first = group.first, group.count > 1, let columns = first.weight.shape.last,
              group.allSatisfy({ $0.kind == .linear && $0.weight.shape.count == 2 && $0.weight.shape[1] == columns
                                 && $0.format == first.format && $0.smoothing == first.smoothing && $0.inputAmax == first.inputAmax }),
              alphas.allSatisfy({ $0 == alphas[0] }),
              group.allSatisfy({ $0.weight.scales.count > 1 }) || group.allSatisfy({ $0.weight.scales == first.weight.scales })
        else { return group.indices.map { requantized(group[$0], merged: merged[$0], alpha: alphas[$0]) } }
        let rows = group.map { $0.weight.shape[0] }, total = rows.reduce(0, +)
        let perChannel = first.weight.scales.count > 1
        let stacked = QuantizedLayer(name: group.map(\.name).joined(separator: " + "), kind: .linear,
                                     weight: QuantizedWeight(format: first.format, shape: [total, columns], codes: group.flatMap(\.weight.codes),
                                                             scales: perChannel ? group.flatMap(\.weight.scales) : first.weight.scales),
                                     inputAmax: first.inputAmax, smoothing: first.smoothing, outputAmax: nil)
        let q = requantized(stacked, merged: Tensor(shape: [total, columns], scalars: merged.flatMap(\.scalars)), alpha: alphas[0])
        var row = 0
        return zip(group, rows).map { layer, count in
            defer { row += count }
            let scales = q.weight.scales.count == 1 ? q.weight.scales : Array(q.weight.scales[row..<(row + count)])
            let weight = QuantizedWeight(format: q.format, shape: [count, columns],
                                         codes: Array(q.weight.codes[(row * columns)..<((row + count) * columns)]), scales: scales)
            return QuantizedLayer(name: layer.name, kind: .linear, weight: weight, inputAmax: q.inputAmax, smoothing: q.smoothing,
                                  outputAmax: layer.outputAmax)
        }
    }

    /// Whether the update is too small for the stored quantization to represent: the merged weight, smoothed with the
    /// stored factors and encoded with the stored scales, gives back the stored codes. Such a layer keeps everything it
    /// has (codes, scales, factors, ranges): recomputing its factors from column maxima that moved by less than one
    /// quantization step would only re-draw the rounding of its activations — on the default model a LoRA at weight
    /// 10⁻⁴ then moved the quantized image as far as quantization itself does (36.8 dB), the full-precision one not at
    /// all (78.7 dB).
    public static func isBelowStoredResolution(_ layer: QuantizedLayer, merged: Tensor) -> Bool {
        let weight = layer.weight
        let rows = weight.shape[0], inner = weight.codes.count / max(rows, 1)
        let smoothedOld = weight.dequantized(), full = fullPrecisionWeight(layer)
        let columns = weight.shape.count > 1 ? weight.shape[1] : inner
        for o in 0..<rows {
            let scale = weight.scales.count == 1 ? weight.scales[0] : weight.scales[o]
            for i in 0..<inner {
                let index = o * inner + i
                let delta = merged.scalars[index] - full.scalars[index]
                guard delta != 0 else { continue }
                let s = layer.kind == .linear ? layer.smoothing?[index % columns] ?? 1 : 1
                if weight.format.encode(smoothedOld.scalars[index] + delta / s, scale: scale) != weight.codes[index] { return false }
            }
        }
        return true
    }

    /// `layer` re-quantized for the merged full-precision weight `merged`; `alpha` is the layer's SmoothQuant α
    /// (nil when the layer is not smoothed).
    public static func requantized(_ layer: QuantizedLayer, merged: Tensor, alpha: Float?) -> QuantizedLayer {
        let perChannel = layer.weight.scales.count > 1
        if merged.scalars == fullPrecisionWeight(layer).scalars { return layer }  // a zero update changes nothing
        if isBelowStoredResolution(layer, merged: merged) { return layer }
        guard let old = layer.smoothing, let alpha, layer.kind == .linear else {
            return QuantizedLayer(name: layer.name, kind: layer.kind,
                                  weight: QuantizedWeight(quantizing: merged, format: layer.format, perChannel: perChannel),
                                  inputAmax: layer.inputAmax, smoothing: layer.smoothing, outputAmax: layer.outputAmax)
        }
        let before = QuantizationRecipe.weightColumnAmax(fullPrecisionWeight(layer))
        let after = QuantizationRecipe.weightColumnAmax(merged)
        let amax = layer.inputAmax
        // the calibration's per-channel activation amax, recovered from the stored factors
        let channelAmax: [Float] = old.indices.map { j in
            let bound = amax.map { $0 / old[j] } ?? 0
            guard alpha > 0, before[j] > 0, old[j] > 1e-4, old[j] < 1e4 else { return bound }
            let x = Float(pow(pow(Double(before[j]), Double(1 - alpha)) / Double(old[j]), 1 / Double(alpha)))
            return x.isFinite && x > 0 ? x : bound
        }
        // s′_j = s_j · (max|W′[:, j]| / max|W[:, j]|)^(1−α): the same as smoothingScales(W′, x, α), written so that a
        // column the update leaves alone keeps its factor bit for bit (a one-ulp change of a factor flips roundings of
        // the fake-quantized activations, which a 20-step run amplifies)
        let scales: [Float] = old.indices.map { j in
            guard before[j] > 0, after[j] > 0, after[j] != before[j] else { return after[j] > 0 || before[j] == 0 ? old[j] : 1 }
            let s = Float(Double(old[j]) * pow(Double(after[j]) / Double(before[j]), Double(1 - alpha)))
            return min(max(s, 1e-4), 1e4)
        }
        let newAmax = amax.map { a -> Float in
            let was = zip(channelAmax, old).map { $0 * $1 }.max() ?? 0, now = zip(channelAmax, scales).map { $0 * $1 }.max() ?? 0
            return scales == old || was <= 0 ? a : a * (now / was)
        }
        // W′/s′ as dequantized(W/s) ⊙ (s/s′) + ΔW/s′, exact where nothing changed
        let smoothedOld = layer.weight.dequantized()
        let full = fullPrecisionWeight(layer)
        let columns = merged.shape[1]
        var smoothed = merged
        for i in smoothed.scalars.indices {
            let j = i % columns
            let delta = merged.scalars[i] - full.scalars[i]
            smoothed.scalars[i] = (scales[j] == old[j] ? smoothedOld.scalars[i] : smoothedOld.scalars[i] * (old[j] / scales[j]))
                + (delta == 0 ? 0 : delta / scales[j])
        }
        return QuantizedLayer(name: layer.name, kind: .linear,
                              weight: QuantizedWeight(quantizing: smoothed, format: layer.format, perChannel: perChannel),
                              inputAmax: newAmax, smoothing: scales, outputAmax: layer.outputAmax)
    }
}

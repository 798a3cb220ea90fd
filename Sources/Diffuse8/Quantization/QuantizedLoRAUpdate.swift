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
///    amax x_j, which the stored factors still encode (s_j = max|W[:, j]|^(1−α) / x_j^α, so
///    x_j = (max|W[:, j]|^(1−α) / s_j)^(1/α); where s_j was clamped or the column was zero, the bound
///    x_j ≤ input_amax / s_j is used);
/// 4. the input amax becomes max_j x_j·s′_j (what the quantizer computes from the same statistics) — unchanged for
///    Conv2d layers, whose input statistics the LoRA does not touch;
/// 5. W′/s′ is quantized with the layer's format and granularity (per-channel when it had one scale per row).
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

    /// `layer` re-quantized for the merged full-precision weight `merged`; `alpha` is the layer's SmoothQuant α
    /// (nil when the layer is not smoothed).
    public static func requantized(_ layer: QuantizedLayer, merged: Tensor, alpha: Float?) -> QuantizedLayer {
        let perChannel = layer.weight.scales.count > 1
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
        let scales = alpha > 0
            ? QuantizationRecipe.smoothingScales(weight: merged, channelAmax: channelAmax, alpha: alpha)
            : after.map { $0 > 0 ? min(max($0, 1e-4), 1e4) : 1 }  // α = 0: s = max|W[:, j]|
        let newAmax = amax.map { _ in zip(channelAmax, scales).map { $0 * $1 }.max() ?? 0 }
        return QuantizedLayer(name: layer.name, kind: .linear,
                              weight: QuantizedWeight(quantizing: Quantizer.smoothedWeight(merged, scales), format: layer.format,
                                                      perChannel: perChannel),
                              inputAmax: newAmax, smoothing: scales, outputAmax: layer.outputAmax)
    }
}

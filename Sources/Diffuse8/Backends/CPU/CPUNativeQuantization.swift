/// Native (`QuantizedExecution.native`) execution of a quantized folder's layers on the CPU: INT8 layers on the
/// INT8 kernels (`CPUInt8LayerHook`), FP8 layers with their 1-byte codes resident and expanded per tile
/// (`CPUFP8LayerHook`); either way the layer's FP32 host weight is released.
public enum CPUNativeQuantization {
    public static func install(_ layer: QuantizedLayer, on linear: Linear) {
        switch layer.format {
        case .int8: CPUInt8LayerHook.install(layer, on: linear)
        case .fp8: CPUFP8LayerHook.install(layer, on: linear)
        }
    }

    public static func install(_ layer: QuantizedLayer, on conv: Conv2d) {
        switch layer.format {
        case .int8: CPUInt8LayerHook.install(layer, on: conv)
        case .fp8: CPUFP8LayerHook.install(layer, on: conv)
        }
    }

    /// Replaces every simulated layer of `unet` by native execution (e.g. after LoRAs were merged into the
    /// simulated layers).
    public static func installReplacingSimulation(in unet: UNet2DConditionModel) {
        for linear in unet.linearLayers {
            if let hook = linear.executionHook as? SimulatedQuantizationHook { install(hook.layer, on: linear) }
        }
        for conv in unet.convolutionLayers {
            if let hook = conv.executionHook as? SimulatedQuantizationHook { install(hook.layer, on: conv) }
        }
    }
}

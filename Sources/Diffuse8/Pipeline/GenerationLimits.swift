/// Bounds on a `GenerationRequest` beyond the model's own (multiples of the VAE factor): sizes and step
/// counts that would otherwise allocate terabytes or run for days are refused with the allowed range.
public enum GenerationLimits {
    public static func check(_ request: GenerationRequest) throws {
        let side = 1...ModelLimits.maximumImageSide
        for (name, value) in [("width", request.width), ("height", request.height)] {
            if let value, !side.contains(value) {
                throw PipelineError("\(name) \(value) is outside 1...\(ModelLimits.maximumImageSide) pixels")
            }
        }
        guard (1...ModelLimits.maximumSteps).contains(request.steps) else {
            throw PipelineError("steps \(request.steps) is outside 1...\(ModelLimits.maximumSteps)")
        }
        guard request.guidanceScale.isFinite else {
            throw PipelineError("the guidance scale must be a finite number, got \(request.guidanceScale)")
        }
        let micro = [request.originalSize.map { [$0.height, $0.width] } ?? [], request.targetSize.map { [$0.height, $0.width] } ?? [],
                     [request.cropTopLeft.top, request.cropTopLeft.left]].flatMap { $0 }
        guard micro.allSatisfy({ (0...(1 << 20)).contains($0) }) else {
            throw PipelineError("SDXL size conditioning values must be in 0...\(1 << 20)")
        }
    }
}

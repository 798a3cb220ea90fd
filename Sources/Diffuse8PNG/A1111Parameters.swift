import Diffuse8

/// The `parameters` PNG text chunk in AUTOMATIC1111's layout, which image viewers and web UIs read back:
/// ```
/// PROMPT
/// Negative prompt: NEGATIVE
/// Steps: 30, Sampler: Euler, CFG scale: 7.5, Seed: 1, Size: 512x512, Model: NAME
/// ```
public struct A1111Parameters: Sendable {
    public let request: GenerationRequest
    public let width: Int
    public let height: Int
    public let model: String

    public init(request: GenerationRequest, width: Int, height: Int, model: String) {
        self.request = request
        self.width = width
        self.height = height
        self.model = model
    }

    public var text: String {
        var lines = [request.prompt]
        if let negative = request.negativePrompt, !negative.isEmpty { lines.append("Negative prompt: \(negative)") }
        lines.append("Steps: \(request.steps), Sampler: \(request.scheduler.samplerName), CFG scale: \(request.guidanceScale), "
                     + "Seed: \(request.seed), Size: \(width)x\(height), Model: \(model), Version: Diffuse8")
        return lines.joined(separator: "\n")
    }
}

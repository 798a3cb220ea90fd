import Diffuse8

/// The `parameters` PNG text chunk in AUTOMATIC1111's layout, which image viewers and web UIs read back:
/// ```
/// PROMPT
/// Negative prompt: NEGATIVE
/// Steps: 30, Sampler: Euler, CFG scale: 7.5, Seed: 1, Size: 512x512, Model: NAME
/// ```
struct A1111Parameters {
    let request: GenerationRequest
    let width: Int
    let height: Int
    let model: String

    var text: String {
        var lines = [request.prompt]
        if let negative = request.negativePrompt, !negative.isEmpty { lines.append("Negative prompt: \(negative)") }
        lines.append("Steps: \(request.steps), Sampler: \(request.scheduler.samplerName), CFG scale: \(request.guidanceScale), "
                     + "Seed: \(request.seed), Size: \(width)x\(height), Model: \(model), Version: Diffuse8")
        return lines.joined(separator: "\n")
    }
}

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

    /// Readers split the chunk into lines, so a line break inside the prompt, the negative prompt or the model
    /// name would start a fake field ("…\nSteps: 1, Seed: 5"): line breaks in them are written as spaces.
    public var text: String {
        var lines = [Self.oneLine(request.prompt)]
        if let negative = request.negativePrompt, !negative.isEmpty { lines.append("Negative prompt: \(Self.oneLine(negative))") }
        lines.append("Steps: \(request.steps), Sampler: \(request.scheduler.samplerName), CFG scale: \(request.guidanceScale), "
                     + "Seed: \(request.seed), Size: \(width)x\(height), Model: \(Self.oneLine(model)), \(extras)Version: Diffuse8")
        return lines.joined(separator: "\n")
    }

    /// The optional fields A1111 writes between `Model` and `Version`, each with its trailing ", ".
    var extras: String {
        var fields: [String] = []
        if let strength = request.initImage.map({ _ in request.strength }) { fields.append("Denoising strength: \(strength)") }
        if request.clipSkip > 1 { fields.append("Clip skip: \(request.clipSkip)") }
        return fields.map { $0 + ", " }.joined()
    }

    /// `text` with every line break (LF, CR, VT, FF, NEL, LS, PS) and NUL replaced by a space.
    static func oneLine(_ text: String) -> String {
        let breaks: Set<Unicode.Scalar> = ["\n", "\r", "\u{0B}", "\u{0C}", "\u{85}", "\u{2028}", "\u{2029}", "\0"]
        return String(String.UnicodeScalarView(text.unicodeScalars.map { breaks.contains($0) ? " " : $0 }))
    }
}

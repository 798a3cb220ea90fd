import ArgumentParser
import Diffuse8
import Diffuse8PNG

struct FidelityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fidelity",
        abstract: "Check a PNG against its prompt: which of the prompt's attributes the image shows.",
        discussion: """
            The prompt must follow the shapes data set's templates (training/dataset.py), e.g. \
            "a small red circle above a large blue square on a white background". Prints the score (fraction of \
            attributes right) and every attribute check, expected vs read.
            """)

    @Argument(help: "A PNG image (8-bit grey, RGB, RGBA or palette).")
    var image: String

    @Argument(help: "The prompt the image was made from.")
    var prompt: String

    func run() throws {
        _ = try CaptionParser.parse(prompt)  // a bad caption fails before the image is read
        let decoded = try PNGDecoder.read(path: image).image
        let report = try PromptFidelity.evaluate(caption: prompt, image: FidelityEvaluation.rgbBytes(decoded),
                                                 width: decoded.width, height: decoded.height)
        print("score: \(FidelityEvaluation.fixed(report.score, digits: 3)) (\(report.correctCount)/\(report.checks.count) attributes)")
        let nameWidth = report.checks.map(\.name.count).max() ?? 0
        let expectedWidth = report.checks.map(\.expected.count).max() ?? 0
        for check in report.checks {
            func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
            print("\(check.correct ? "ok  " : "MISS") \(pad(check.name, nameWidth))  expected \(pad(check.expected, expectedWidth))  read \(check.observed)")
        }
        for shape in report.detected {
            print("detected: \(shape.size) \(shape.colour) \(shape.shape) at (\(Int(shape.centroidX.rounded())), "
                  + "\(Int(shape.centroidY.rounded()))), \(shape.area) px")
        }
    }
}

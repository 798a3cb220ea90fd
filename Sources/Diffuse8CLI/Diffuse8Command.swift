import ArgumentParser

@main
struct Diffuse8Command: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diffuse8",
        abstract: "Run Stable Diffusion models (SD1.x, SDXL diffusers folders) in Swift, with 8-bit quantization.",
        subcommands: [GenerateCommand.self, InspectCommand.self, FidelityCommand.self, EvaluateFidelityCommand.self,
                      CUDASelfTestCommand.self, BenchCommand.self])
}

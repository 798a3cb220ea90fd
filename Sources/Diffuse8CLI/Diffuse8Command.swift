import ArgumentParser

@main
struct Diffuse8Command: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diffuse8",
        abstract: "Run Stable Diffusion models (SD1.x, SDXL diffusers folders) in Swift, with 8-bit quantization.",
        subcommands: [GenerateCommand.self, ServeCommand.self, InspectCommand.self,
                      CalibrateCommand.self, MergeStatsCommand.self, QuantizeCommand.self, ExportONNXCommand.self, EvalCommand.self,
                      FidelityCommand.self, EvaluateFidelityCommand.self,
                      BenchCommand.self, CUDASelfTestCommand.self])

    /// Installs the interrupt clean-up (not for `serve`, which shuts down gracefully on the same signals), then
    /// parses and runs the command.
    static func main() async {
        if CommandLine.arguments.dropFirst().first != ServeCommand.configuration.commandName {
            InterruptHandler.install()
        }
        await main(nil)
    }
}

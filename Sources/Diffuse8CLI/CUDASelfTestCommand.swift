import ArgumentParser
import Diffuse8
import Diffuse8Checks

/// `diffuse8 cuda-selftest`: runs every CUDA kernel on random data and compares it with the CPU
/// reference kernels; prints a table and exits non-zero on a failure (2 when there is no CUDA GPU).
/// The same as the stand-alone `diffuse8-cuda-selftest` binary.
struct CUDASelfTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cuda-selftest",
        abstract: "Check the CUDA kernels against the CPU reference (needs an NVIDIA GPU).")

    @Flag(help: "Add 4096-token attention checks (slower CPU reference).")
    var large = false

    @Option(help: "Run only the checks whose name contains this text, ignoring case (e.g. \"layernorm\").")
    var only: String?

    @Flag(help: "Also time GEMMs, attention and UNet blocks at model shapes.")
    var bench = false

    func validate() throws {
        if let only, only.isEmpty { throw ValidationError("--only takes a text that the names of the checks to run contain") }
    }

    func run() throws {
        let code = CUDASelfTest.runReport(large: large, only: only, benchmark: bench)
        if code != .passed { throw ExitCode(code.rawValue) }
    }
}

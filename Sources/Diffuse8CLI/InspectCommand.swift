import ArgumentParser
import Diffuse8

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print a diffusers folder's family, components, parameter counts and dtypes.")

    @Argument(help: "A diffusers model folder.")
    var directory: String

    func run() throws {
        let folder = try DiffusersFolder(path: directory)
        print("\(directory): \(folder.pipelineClass) (\(folder.family))")
        print(try folder.summary().description)
    }
}

import ArgumentParser
import Diffuse8

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print a diffusers folder's or single-file checkpoint's family, components, parameter counts and dtypes.")

    @Argument(help: "A diffusers model folder or a single-file SD1.x/SDXL .safetensors checkpoint.")
    var directory: String

    func run() throws {
        if SingleFileCheckpoint.isFile(directory) {
            let checkpoint = try SingleFileCheckpoint(path: directory)
            let reference = ReferenceConfigurations.label(of: checkpoint.family)
            print("\(directory): single-file \(checkpoint.familyName) checkpoint, loaded with the \(reference) reference configurations")
            print(try checkpoint.summary().description)
            try checkpoint.checkShapes(against: DiffusersFolder(path: ReferenceConfigurations.folder(for: checkpoint.family)),
                                       described: "the \(reference) reference configurations",
                                       advice: "a model of another architecture needs its diffusers folder (--model DIR, or --config DIR with the file)")
            print("shapes: fit the \(reference) reference configurations")
            return
        }
        let folder = try DiffusersFolder(path: directory)
        print("\(directory): \(folder.pipelineClass) (\(folder.family))")
        print(try folder.summary().description)
    }
}

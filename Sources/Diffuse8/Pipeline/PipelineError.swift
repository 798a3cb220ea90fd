/// Errors of the generation pipeline that come from the request or the model folder.
public struct PipelineError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

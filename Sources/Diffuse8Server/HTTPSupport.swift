import Hummingbird
import Foundation

/// JSON, HTML and error responses in the shapes A1111 clients expect.
enum Responses {
    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = (try? encoder.encode(value)) ?? Data("null".utf8)
        return raw(bytes, contentType: "application/json", status: status, headers: headers)
    }

    static func raw(_ bytes: some Sequence<UInt8>, contentType: String, status: HTTPResponse.Status = .ok,
                    headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = contentType
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// FastAPI's `{"detail": "message"}` error body.
    static func detail(_ message: String, status: HTTPResponse.Status, headers: HTTPFields = [:]) -> Response {
        json(["detail": message], status: status, headers: headers)
    }

    /// 422 with FastAPI's validation list.
    static func validation(_ failure: ValidationFailure) -> Response {
        json(failure, status: .unprocessableContent)
    }
}

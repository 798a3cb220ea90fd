import Hummingbird
import Foundation

/// HTTP basic authentication for every route but `/internal/ping` (health checks), as A1111's `--api-auth user:pass`.
/// A wrong or missing password gets 401 with `WWW-Authenticate: Basic` before any body is read.
struct BasicAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Accepted `user:password` pairs.
    let credentials: [String]
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path == "/internal/ping" || APIAuth.authorizes(request.headers[.authorization], credentials: credentials) {
            return try await next(request, context)
        }
        metrics.countError(.unauthorized)
        return Responses.detail("Incorrect username or password", status: .unauthorized,
                                headers: [.wwwAuthenticate: "Basic realm=\"diffuse8\""])
    }
}

/// `--api-auth` values.
public enum APIAuth {
    /// `user:password[,user2:password2…]` → the accepted pairs.
    public static func parse(_ spec: String) throws -> [String] {
        let pairs = spec.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        guard !pairs.isEmpty, pairs.allSatisfy({ $0.contains(":") && !$0.hasPrefix(":") }) else {
            throw ServerError("--api-auth expects user:password (several separated by commas), got '\(spec)'")
        }
        return pairs
    }

    /// Whether an `Authorization` header value carries one of `credentials`.
    public static func authorizes(_ header: String?, credentials: [String]) -> Bool {
        guard let header, header.count < 4096, header.lowercased().hasPrefix("basic "),
              let data = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)) else { return false }
        let given = Array(data)
        var match = false
        for pair in credentials where constantTimeEqual(Array(pair.utf8), given) { match = true }
        return match
    }

    /// Compares without stopping at the first difference, so timing does not reveal how much of a password matched.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in a.indices { difference |= a[i] ^ b[i] }
        return difference == 0
    }
}

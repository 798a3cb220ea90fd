import Hummingbird
import Logging
import Foundation

/// One structured log line per request (method, path, status, duration in milliseconds, request id) and the
/// request latency histogram in `/metrics`.
struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: ServerMetrics
    /// Paths recorded under their own label in `/metrics`; others are counted as "other" (bounded label values).
    let knownPaths: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var status = 500
        defer {
            let seconds = ProgressTracker.seconds(ContinuousClock.now - start)
            let path = request.uri.path
            metrics.recordRequest(route: knownPaths.contains(path) ? path : "other", method: request.method.rawValue,
                                  status: status, seconds: seconds)
            context.logger.info("request", metadata: [
                "method": .string(request.method.rawValue), "path": .string(path), "status": .stringConvertible(status),
                "duration_ms": .string(String(format: "%.2f", seconds * 1000)),
            ])
        }
        do {
            let response = try await next(request, context)
            status = response.status.code
            return response
        } catch let error as any HTTPResponseError {
            status = error.status.code
            throw error
        }
    }
}

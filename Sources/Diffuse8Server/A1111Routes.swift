import Diffuse8
import Diffuse8PNG
import Hummingbird
import Foundation

/// The routes: AUTOMATIC1111's `/sdapi/v1` subset, `/internal/ping`, `/metrics` and the web page at `/`.
/// Every check (auth, body size, JSON, field ranges, sampler) happens here, before a job enters the queue.
public struct A1111Routes: Sendable {
    public let service: GenerationService
    /// Extra options posted to `/sdapi/v1/options`, echoed back by GET (A1111 keeps them; Diffuse8 only acts on
    /// `sd_model_checkpoint`).
    private let storedOptions = OptionsStore()

    public static let paths: Set<String> = [
        "/", "/internal/ping", "/metrics", "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/progress", "/sdapi/v1/interrupt",
        "/sdapi/v1/samplers", "/sdapi/v1/schedulers", "/sdapi/v1/sd-models", "/sdapi/v1/options", "/sdapi/v1/scripts",
    ]

    public init(service: GenerationService) { self.service = service }

    /// A router with every route, the request log and (when `credentials` is not empty) basic auth.
    public func makeRouter(credentials: [String]) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: RequestLogMiddleware(metrics: service.metrics, knownPaths: Self.paths))
        router.add(middleware: MetricsMiddleware())  // Hummingbird's swift-metrics request counters (hb_*)
        if !credentials.isEmpty { router.add(middleware: BasicAuthMiddleware(credentials: credentials, metrics: service.metrics)) }

        router.get("/") { _, _ in Responses.raw(Array(WebPage.html.utf8), contentType: "text/html; charset=utf-8") }
        router.get("/internal/ping") { _, _ in Responses.raw(Array("{}".utf8), contentType: "application/json") }
        router.get("/metrics") { _, _ in
            Responses.raw(Array(service.metrics.exposition().utf8), contentType: "text/plain; version=0.0.4")
        }
        router.post("/sdapi/v1/txt2img") { request, context in try await txt2img(request, context: context) }
        router.post("/sdapi/v1/img2img") { request, context in try await txt2img(request, context: context, imageToImage: true) }
        router.get("/sdapi/v1/progress") { request, _ in progress(skipImage: request.uri.queryParameters.get("skip_current_image") == "true") }
        router.post("/sdapi/v1/interrupt") { _, _ in
            service.tracker.interrupt()
            return Responses.json([String: String]())
        }
        router.get("/sdapi/v1/samplers") { _, _ in Responses.json(SamplerCatalog.samplers) }
        router.get("/sdapi/v1/schedulers") { _, _ in Responses.json(SamplerCatalog.scheduleTypes) }
        router.get("/sdapi/v1/scripts") { _, _ in Responses.json(["txt2img": [String](), "img2img": [String]()]) }
        router.get("/sdapi/v1/sd-models") { _, _ in
            Responses.json(service.catalog.entries.map {
                SDModelItem(title: $0.name, model_name: $0.name, hash: nil, sha256: nil, filename: $0.path, config: nil)
            })
        }
        router.get("/sdapi/v1/options") { _, _ in options() }
        router.post("/sdapi/v1/options") { request, context in try await setOptions(request, context: context) }
        return router
    }

    /// The body, or a 413 response: a declared `Content-Length` over the limit is refused before reading a byte.
    func collectBody(_ request: Request) async throws -> Result<[UInt8], HTTPError> {
        let limit = service.limits.maxBodyBytes
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit {
            return .failure(HTTPError(.contentTooLarge))
        }
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return .success(Array(buffer.readableBytesView))
        } catch let error as HTTPError where error.status == .contentTooLarge {
            return .failure(error)
        }
    }

    func tooLarge() -> Response {
        service.metrics.countError(.bodyTooLarge)
        return Responses.detail("request body larger than \(service.limits.maxBodyBytes) bytes", status: .contentTooLarge,
                                headers: [.connection: "close"])
    }

    /// `POST /sdapi/v1/txt2img`, or `/img2img` with `imageToImage` (the same response layout).
    func txt2img(_ request: Request, context: BasicRequestContext, imageToImage: Bool = false) async throws -> Response {
        guard case .success(let body) = try await collectBody(request) else { return tooLarge() }
        let parameters: Txt2ImgParameters
        do {
            parameters = try Txt2ImgParameters.parse(body, nativeSize: service.nativeSize, limits: service.limits,
                                                     imageToImage: imageToImage)
        } catch {
            service.metrics.countError(.validation)
            return Responses.validation(error)
        }
        do {
            return Responses.json(try await service.txt2img(parameters))
        } catch let error as JobQueueError {
            return queueError(error)
        } catch {
            service.metrics.countError(.internalError)
            context.logger.error("txt2img failed", metadata: ["error": .string(String(describing: error))])
            return Responses.detail(String(describing: error), status: .internalServerError)
        }
    }

    func queueError(_ error: JobQueueError) -> Response {
        switch error {
        case .full:
            service.metrics.countError(.queueFull)
            let eta = service.tracker.snapshot.etaRelative
            return Responses.detail(error.description, status: .serviceUnavailable,
                                    headers: [.retryAfter: String(max(1, Int(eta.rounded(.up))))])
        case .shuttingDown:
            service.metrics.countError(.shuttingDown)
            return Responses.detail(error.description, status: .serviceUnavailable, headers: [.retryAfter: "5"])
        }
    }

    func progress(skipImage: Bool) -> Response {
        let s = service.tracker.snapshot
        let depth = service.queueDepthEstimate
        var preview: String?
        if !skipImage, let latents = s.latents, let image = LatentPreview.image(latents: latents, map: service.previewMap) {
            preview = (try? PNGEncoder.encode(image)).map { Data($0).base64EncodedString() }
        }
        return Responses.json(ProgressResponse(
            progress: s.progress, eta_relative: s.etaRelative,
            state: .init(interrupted: s.interrupted, job: s.job, job_count: s.jobCount, job_timestamp: s.jobTimestamp,
                         job_no: s.jobNumber, sampling_step: s.samplingStep, sampling_steps: s.samplingSteps, queue_depth: depth),
            current_image: preview, textinfo: nil))
    }

    func options() -> Response {
        var values = storedOptions.values
        values["sd_model_checkpoint"] = .string(service.currentModel.name)
        values["sd_checkpoint_hash"] = JSONValue.null
        return Responses.json(values)
    }

    func setOptions(_ request: Request, context: BasicRequestContext) async throws -> Response {
        guard case .success(let body) = try await collectBody(request) else { return tooLarge() }
        guard let json = try? JSONDecoder().decode(JSONValue.self, from: Data(body)), let object = json.object else {
            service.metrics.countError(.validation)
            return Responses.validation(ValidationFailure([ValidationIssue(field: nil, "Input should be a valid dictionary", type: "dict_type")]))
        }
        if let checkpoint = object["sd_model_checkpoint"] {
            guard let title = checkpoint.string else {
                service.metrics.countError(.validation)
                return Responses.validation(ValidationFailure([ValidationIssue(field: "sd_model_checkpoint", "Input should be a valid string", type: "string_type")]))
            }
            do {
                try await service.switchModel(title: title)
            } catch let failure as ValidationFailure {
                service.metrics.countError(.validation)
                return Responses.validation(failure)
            } catch let error as JobQueueError {
                return queueError(error)
            }
        }
        storedOptions.merge(object.filter { $0.key != "sd_model_checkpoint" })
        return Responses.json(true)
    }
}

/// Options clients posted, kept so that GET returns them.
final class OptionsStore: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String: JSONValue] = [:]
    var values: [String: JSONValue] { lock.withLock { stored } }
    func merge(_ new: [String: JSONValue]) { lock.withLock { stored.merge(new) { $1 } } }
}

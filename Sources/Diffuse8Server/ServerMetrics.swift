import Prometheus

/// The server's Prometheus metrics (`GET /metrics`, text exposition format): queue depth, images and steps done,
/// request and step latency histograms, errors by kind.
public final class ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let queueDepth: Gauge
    let imagesGenerated: Counter
    let stepsDone: Counter
    let stepSeconds: ValueHistogram
    let generationSeconds: ValueHistogram

    /// Kinds of errors counted in `diffuse8_errors_total{kind=...}`.
    public enum ErrorKind: String, CaseIterable, Sendable {
        case validation, queueFull = "queue_full", shuttingDown = "shutting_down", unauthorized, bodyTooLarge = "body_too_large",
             interrupted, internalError = "internal"
    }

    static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "diffuse8", metricName: metric, unitName: unit, helpText: help)
    }

    private static let errors = name("errors", "total", "Errors by kind")
    private static let requestSeconds = name("http_request_duration", "seconds", "HTTP request latency by route, method and status")

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        queueDepth = registry.makeGauge(descriptor: Self.name("queue", "depth", "Jobs waiting behind the running one"))
        imagesGenerated = registry.makeCounter(descriptor: Self.name("images_generated", "total", "Images generated"))
        stepsDone = registry.makeCounter(descriptor: Self.name("denoise_steps", "total", "Denoising steps done"))
        stepSeconds = registry.makeValueHistogram(
            descriptor: Self.name("step_duration", "seconds", "Duration of one denoising step"),
            buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
        generationSeconds = registry.makeValueHistogram(
            descriptor: Self.name("generation_duration", "seconds", "Duration of one image (text encoding, denoising, decoding)"),
            buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300])
        for kind in ErrorKind.allCases { _ = error(kind) }  // every kind shows up, at 0, from the start
    }

    func error(_ kind: ErrorKind) -> Counter {
        registry.makeCounter(descriptor: Self.errors, labels: [("kind", kind.rawValue)])
    }

    func countError(_ kind: ErrorKind) { error(kind).increment() }

    /// Records one HTTP request's latency under its route and status code.
    func recordRequest(route: String, method: String, status: Int, seconds: Double) {
        registry.makeValueHistogram(
            descriptor: Self.requestSeconds, labels: [("route", route), ("method", method), ("status", String(status))],
            buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300]).record(seconds)
    }

    /// The text exposition of every metric.
    public func exposition() -> String { registry.emitToString() }
}

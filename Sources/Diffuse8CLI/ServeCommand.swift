import ArgumentParser
import Diffuse8
import Diffuse8Server
import Foundation
import Logging
import Metrics
import Prometheus

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve an AUTOMATIC1111-compatible HTTP API (/sdapi/v1) and a web page (docs/SERVER.md).")

    @Option(name: .long, help: "A diffusers model folder or a single-file SD1.x/SDXL .safetensors checkpoint to load first; default: the embedded default model.")
    var model: String?

    @Option(name: .long, help: "A folder of diffusers model folders and single-file .safetensors checkpoints that /sdapi/v1/options can switch among.")
    var modelsDir: String?

    @Option(name: .long, help: "Where the networks run: cpu or cuda.")
    var device: ComputeDevice = .cpu

    @Option(name: .long, help: "With --device cuda: fp16 (default) or bf16.")
    var precision: GPUPrecision = .fp16

    @Option(name: .long, help: "Address to bind; the default serves this machine only.")
    var host: String = "127.0.0.1"

    @Option(name: .long, help: "Port (0: any free port; the chosen one is printed).")
    var port: Int = 7860

    @Option(name: .long, help: "HTTP basic auth, user:password (several: comma-separated).")
    var apiAuth: String?

    @Option(name: .long, help: "Jobs that may wait behind the running one; more get 503.")
    var maxQueue: Int = ServerLimits().maxQueuedJobs

    @Option(name: .long, help: "Largest width or height in pixels.")
    var maxSize: Int = ServerLimits().maxImageSide

    @Option(name: .long, help: "Most denoising steps per image.")
    var maxSteps: Int = ServerLimits().maxSteps

    @Option(name: .long, help: "Most images per request (batch_size × n_iter).")
    var maxImages: Int = ServerLimits().maxImagesPerRequest

    @Option(name: .long, help: "Largest request body in bytes.")
    var maxBodyBytes: Int = ServerLimits().maxBodyBytes

    @Option(name: .long, help: "CPU threads (default: all cores).")
    var threads: Int?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port \(port) is not in 0...65535") }
        guard maxQueue >= 0 else { throw ValidationError("--max-queue must be 0 or more") }
        guard maxSize >= 8, maxSteps >= 1, maxImages >= 1, maxBodyBytes >= 1024 else {
            throw ValidationError("--max-size ≥ 8, --max-steps ≥ 1, --max-images ≥ 1 and --max-body-bytes ≥ 1024 are required")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level \(logLevel) is not a log level") }
        if precision != .fp16 && device != .cuda { throw ValidationError("--precision applies to --device cuda") }
    }

    func run() async throws {
        if let threads { CPUConfiguration.threadCount = max(1, threads) }
        var logger = Logger(label: "diffuse8.serve")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let credentials = try apiAuth.map(APIAuth.parse) ?? []

        var catalog = try modelsDir.map(ModelCatalog.scan) ?? ModelCatalog(entries: [])
        let initial: ModelCatalog.Entry
        if let model {
            initial = catalog.include(path: model)
        } else if let first = catalog.entries.first {
            initial = first
        } else {
            initial = catalog.include(path: try DefaultModel.locate())
        }

        var limits = ServerLimits()
        limits.maxQueuedJobs = maxQueue
        limits.maxImageSide = maxSize
        limits.maxSteps = maxSteps
        limits.maxImagesPerRequest = maxImages
        limits.maxBodyBytes = maxBodyBytes

        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))  // swift-metrics users land in /metrics too
        let (device, storage) = (self.device, precision.storageType)
        logger.info("loading model", metadata: ["path": .string(initial.path), "device": .string(device.rawValue)])
        let service = try GenerationService(
            catalog: catalog, initial: initial, limits: limits, metrics: ServerMetrics(registry: registry),
            loader: { try StableDiffusionPipeline(directory: $0, device: device, precision: storage) })

        var configuration = A1111Server.Configuration()
        configuration.host = host
        configuration.port = port
        configuration.credentials = credentials
        let host = self.host
        try await A1111Server(configuration: configuration, service: service, logger: logger).run { port in
            print("listening on http://\(host):\(port)")
            fflush(stdout)
        }
    }
}

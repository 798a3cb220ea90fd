import Diffuse8
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

/// `diffuse8 serve`: the HTTP server around a `GenerationService`. On SIGTERM/SIGINT it stops taking jobs, fails
/// the waiting ones with 503, lets the running one finish and answer, then closes.
public struct A1111Server {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        public var port = 7860
        /// `user:password` pairs for HTTP basic auth; empty: no auth.
        public var credentials: [String] = []
        public init() {}
    }

    public let configuration: Configuration
    public let service: GenerationService
    public let logger: Logger

    public init(configuration: Configuration, service: GenerationService, logger: Logger) {
        self.configuration = configuration
        self.service = service
        self.logger = logger
    }

    /// Serves until a shutdown signal. `onListening` gets the bound port (useful with port 0).
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let router = A1111Routes(service: service).makeRouter(credentials: configuration.credentials)
        let logger = self.logger
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "Diffuse8"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("listening", metadata: ["address": "http://\(configuration.host):\(port)"])
                onListening(port)
            },
            logger: logger)
        // Turn the signals' default action (terminate at once) off, as ServiceLifecycle itself does on Darwin, so
        // that SIGTERM/SIGINT only reach its signal sources and start the graceful shutdown below.
        for sig in [SIGTERM, SIGINT] { signal(sig, SIG_IGN) }
        // Graceful shutdown runs in reverse order: the queue drains first, then the HTTP server closes.
        let group = ServiceGroup(configuration: .init(
            services: [app, QueueDrainService(queue: service.queue, logger: logger)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

/// Waits for the shutdown signal, then drains the job queue.
struct QueueDrainService: Service {
    let queue: JobQueue
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        logger.info("shutting down: refusing new jobs, failing waiting ones, finishing the running one")
        await queue.shutDown()
    }
}

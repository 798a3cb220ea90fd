import Diffuse8
@testable import Diffuse8Server
import Foundation
import XCTest

/// The server's job queue (one job at a time, bounded waiting list, shutdown) and the generation service's
/// progress and interrupt, on the tiny test pipeline. Tests wait for events (a job started, a step done), never
/// for a duration.
final class ServerQueueTests: XCTestCase {
    /// A job that blocks its worker thread until `release()`; `started` is fulfilled when it begins.
    final class Gate: @unchecked Sendable {
        let started: XCTestExpectation
        private let semaphore = DispatchSemaphore(value: 0)
        init(_ name: String) { started = XCTestExpectation(description: name) }
        func wait() { started.fulfill(); semaphore.wait() }
        func release() { semaphore.signal() }
    }

    /// Yields until `condition` holds (the queue is an actor: its state changes as other tasks run).
    func eventually(_ condition: @escaping () async -> Bool) async {
        while !(await condition()) { await Task.yield() }
    }

    func testJobsRunOneAtATimeInOrderAndTheWaitingListIsBounded() async throws {
        let queue = JobQueue(capacity: 2)
        let first = Gate("first")
        let order = OrderLog()
        let running = Task { try await queue.run { first.wait(); order.append(1) } }
        await fulfillment(of: [first.started], timeout: 60)
        let second = Task { try await queue.run { order.append(2) } }
        await eventually { await queue.depth == 1 }
        let third = Task { try await queue.run { order.append(3) } }
        await eventually { await queue.depth == 2 }
        // The waiting list is full: a fourth job is refused at once, while the first still runs.
        do {
            try await queue.run { order.append(4) }
            XCTFail("a job beyond the capacity was accepted")
        } catch let error as JobQueueError {
            XCTAssertEqual(error, .full(capacity: 2))
        }
        first.release()
        try await running.value
        try await second.value
        try await third.value
        XCTAssertEqual(order.values, [1, 2, 3])
        let (depth, busy) = (await queue.depth, await queue.isBusy)
        XCTAssertEqual(depth, 0)
        XCTAssertFalse(busy)
    }

    func testShutdownFailsWaitingJobsAndFinishesTheRunningOne() async throws {
        let queue = JobQueue(capacity: 4)
        let first = Gate("first")
        let running = Task { try await queue.run { first.wait(); return "finished" } }
        await fulfillment(of: [first.started], timeout: 60)
        let waiting = Task { try await queue.run { "should not run" } }
        await eventually { await queue.depth == 1 }
        let shutdown = Task { await queue.shutDown() }
        do {
            _ = try await waiting.value
            XCTFail("a waiting job ran during shutdown")
        } catch let error as JobQueueError {
            XCTAssertEqual(error, .shuttingDown)
        }
        first.release()
        let result = try await running.value
        XCTAssertEqual(result, "finished")
        await shutdown.value
        do {
            _ = try await queue.run { 1 }
            XCTFail("a job was accepted after shutdown")
        } catch let error as JobQueueError {
            XCTAssertEqual(error, .shuttingDown)
        }
    }

    func testProgressFractionCountsImagesAndSteps() {
        let tracker = ProgressTracker()
        let cancellation = GenerationCancellation()
        tracker.begin(job: "txt2img", images: 2, steps: 10, cancellation: cancellation)
        tracker.beginImage(1)
        tracker.step(5, of: 10)
        let snapshot = tracker.snapshot
        XCTAssertEqual(snapshot.progress, 0.75, accuracy: 1e-12)  // (1 image + 5/10) / 2
        XCTAssertEqual(snapshot.jobNumber, 1)
        XCTAssertTrue(tracker.interrupt())
        XCTAssertTrue(cancellation.isCancelled)
        tracker.end()
        XCTAssertFalse(tracker.interrupt(), "nothing to interrupt when idle")
        XCTAssertEqual(tracker.snapshot.progress, 0)
    }

    func makeService(tracker: ProgressTracker = ProgressTracker()) throws -> GenerationService {
        let catalog = ModelCatalog.single(path: Fixtures.path("tiny-sd15"))
        return try GenerationService(catalog: catalog, initial: catalog.entries[0], limits: ServerLimits(),
                                     metrics: ServerMetrics(), tracker: tracker,
                                     loader: { try StableDiffusionPipeline(directory: $0) })
    }

    func testInterruptStopsAtTheNextStep() async throws {
        // The interrupt arrives right after step 3 of the first image: no fourth step may run, no image is
        // returned, and the second image never starts.
        let box = TrackerBox()
        let tracker = ProgressTracker { step in
            guard step == 3, let tracker = box.tracker else { return }
            box.preview = tracker.snapshot.latents.flatMap { LatentPreview.image(latents: $0) }
            XCTAssertTrue(tracker.interrupt())
        }
        box.tracker = tracker
        let service = try makeService(tracker: tracker)
        let parameters = try Txt2ImgParameters.parse(Array(#"{"prompt": "a cat", "steps": 20, "seed": 1, "n_iter": 2}"#.utf8),
                                                     nativeSize: service.nativeSize, limits: service.limits)
        let response = try await service.txt2img(parameters)
        let info = try JSONDecoder().decode(GenerationInfo.self, from: Data(response.info.utf8))
        XCTAssertTrue(info.interrupted)
        XCTAssertTrue(response.images.isEmpty)
        XCTAssertTrue(service.metrics.exposition().contains("\ndiffuse8_denoise_steps_total 3\n"), service.metrics.exposition())
        XCTAssertEqual(box.preview?.width, service.nativeSize / 8, "one preview pixel per latent")
        XCTAssertEqual(service.tracker.snapshot.progress, 0, "idle again")
    }

    func testGenerationInfoFollowsA1111() async throws {
        let service = try makeService()
        let parameters = try Txt2ImgParameters.parse(Array(#"{"prompt": "a cat", "steps": 2, "seed": 41, "batch_size": 2}"#.utf8),
                                                     nativeSize: service.nativeSize, limits: service.limits)
        let response = try await service.txt2img(parameters)
        let info = try JSONDecoder().decode(GenerationInfo.self, from: Data(response.info.utf8))
        XCTAssertEqual(info.all_seeds, [41, 42])
        XCTAssertEqual(info.infotexts.count, 2)
        XCTAssertEqual(response.images.count, 2)
        XCTAssertTrue(info.infotexts[1].contains("Seed: 42,"))
        let png = try XCTUnwrap(Data(base64Encoded: response.images[0]))
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    }
}

/// Appends from worker threads.
final class OrderLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [Int] = []
    func append(_ v: Int) { lock.withLock { stored.append(v) } }
    var values: [Int] { lock.withLock { stored } }
}

/// Lets a tracker's step observer reach the tracker itself.
final class TrackerBox: @unchecked Sendable {
    var tracker: ProgressTracker?
    var preview: PixelImage?
}

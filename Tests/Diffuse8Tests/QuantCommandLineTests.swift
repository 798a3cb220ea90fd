import Foundation
import XCTest
import Diffuse8

/// `diffuse8 calibrate / merge-stats / quantize / eval` end to end on the tiny SD1.5 fixture, and their
/// refusals of bad input (clear message, non-zero exit, no output left behind).
final class QuantCommandLineTests: ExecutableTestCase {
    private var model: String { Fixtures.path("tiny-sd15") }

    override func setUpWithError() throws {
        try super.setUpWithError()
        try "a red circle\n# comment\n\na blue square\na green triangle\n".write(toFile: scratch.path + "/calib.txt", atomically: true, encoding: .utf8)
        try "a yellow star\n".write(toFile: scratch.path + "/eval.txt", atomically: true, encoding: .utf8)
    }

    private func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    func testCalibrateMergeQuantizeGenerateEval() throws {
        let s = scratch.path
        var r = try run(["calibrate", "--model", model, "--calib-prompts", s + "/calib.txt", "--calib-steps", "2", "--shard", "0/2", "-o", s + "/a.d8s"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["calibrate", "--model", model, "--calib-prompts", s + "/calib.txt", "--calib-steps", "2", "--shard", "1/2", "-o", s + "/b.d8s"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["merge-stats", s + "/a.d8s", s + "/b.d8s", "-o", s + "/all.d8s"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["quantize", "--model", model, "--stats", s + "/all.d8s", "--format", "int8", "--level", "3", "--alpha", "search", "-o", s + "/q8"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(exists(s + "/q8/unet/quantization.json"))
        r = try run(["generate", "--model", s + "/q8", "a red circle", "--steps", "2", "-o", s + "/q8.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["eval", "--model", model, "--quantized", s + "/q8", "--prompts", s + "/eval.txt", "--steps", "2", "-o", s + "/ev"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for f in ["report.md", "report.json", "grid.png"] { XCTAssertTrue(exists(s + "/ev/" + f), f) }

        // Statistics with another T than requested → clear error, no output folder.
        r = try run(["quantize", "--model", model, "--stats", s + "/all.d8s", "--calib-steps", "5", "-o", s + "/bad"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("2 steps"), r.stderr)
        XCTAssertFalse(exists(s + "/bad"))
        // Statistics from another model → clear error.
        r = try run(["quantize", "--model", Fixtures.path("tiny-sdxl"), "--stats", s + "/all.d8s", "-o", s + "/bad"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("another model"), r.stderr)
        XCTAssertFalse(exists(s + "/bad"))
    }

    func testBadOptionsAreRefused() throws {
        let s = scratch.path
        let cases: [([String], String)] = [
            (["quantize", "--model", model, "--dynamic", "--level", "5", "-o", s + "/x"], "1, 2, 2.5, 3, 4"),
            (["quantize", "--model", model, "--dynamic", "--format", "int4", "-o", s + "/x"], "int8 or fp8"),
            (["quantize", "--model", model, "--dynamic", "--format", "int8", "--level", "4", "-o", s + "/x"], "--format fp8"),
            (["quantize", "--model", model, "--dynamic", "--percentile", "1.5", "-o", s + "/x"], "(0, 1]"),
            (["quantize", "--model", model, "--dynamic", "--percentile", "0", "-o", s + "/x"], "(0, 1]"),
            (["quantize", "--model", model, "--dynamic", "--collect-method", "median", "-o", s + "/x"], "min-mean"),
            (["quantize", "--model", model, "--dynamic", "--calibration", "entropy", "-o", s + "/x"], "max or percentile"),
            (["quantize", "--model", model, "--dynamic", "--format", "fp8", "--level", "4", "--probability-amax", "0.5", "-o", s + "/x"], "calibrated or 1"),
            (["quantize", "--model", model, "--dynamic", "--preset", "fast", "-o", s + "/x"], "recommended, nvidia or naive"),
            (["quantize", "--model", model, "-o", s + "/x"], "--stats"),
            (["calibrate", "--model", model, "--calib-prompts", s + "/calib.txt", "--calib-steps", "2", "--shard", "2/2", "-o", s + "/x"], "0 ≤ i < n"),
        ]
        for (arguments, message) in cases {
            let r = try run(arguments)
            XCTAssertNotEqual(r.status, 0, arguments.joined(separator: " "))
            XCTAssertTrue(r.stderr.contains(message), "\(arguments): \(r.stderr)")
            XCTAssertFalse(exists(s + "/x"))
        }
        try "# nothing\n".write(toFile: s + "/empty.txt", atomically: true, encoding: .utf8)
        let r = try run(["calibrate", "--model", model, "--calib-prompts", s + "/empty.txt", "--calib-steps", "2", "-o", s + "/x"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("no prompts"), r.stderr)
    }

    /// Ctrl-C during calibration: the process ends by the signal and no statistics file (or temporary file)
    /// exists. The CLI's test pause point holds it after the first prompt, so the signal lands mid-run on any
    /// machine, however fast.
    func testInterruptedCalibrationLeavesNoFile() throws {
        let s = scratch.path
        let prompts = (0..<40).map { "prompt number \($0)" }.joined(separator: "\n")
        try prompts.write(toFile: s + "/many.txt", atomically: true, encoding: .utf8)
        let process = try start(["calibrate", "--model", model, "--calib-prompts", s + "/many.txt", "--calib-steps", "4", "-o", s + "/stats.d8s"],
                                environment: ["DIFFUSE8_TEST_PAUSE_AT": "calibration-started"])
        XCTAssertTrue(process.waitForStderr(containing: "paused at calibration-started"), process.stderr)
        process.send(SIGINT)
        let r = process.finish()
        XCTAssertEqual(process.process.terminationReason, .uncaughtSignal, r.stderr)
        XCTAssertEqual(r.status, SIGINT)
        XCTAssertFalse(exists(s + "/stats.d8s"))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: s).filter { $0.contains("stats") }
        XCTAssertEqual(leftovers, [])
    }

    /// SIGTERM while the quantized folder is being assembled (`<out>.partial-<pid>` exists): it is removed,
    /// the output folder never appears.
    func testTerminatedQuantizeRemovesPartialFolder() throws {
        let s = scratch.path
        let process = try start(["quantize", "--model", model, "--dynamic", "-o", s + "/q"],
                                environment: ["DIFFUSE8_TEST_PAUSE_AT": "quantized-folder-written"])
        XCTAssertTrue(process.waitForStderr(containing: "paused at quantized-folder-written"), process.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: s).filter { $0.hasPrefix("q.partial-") }.count, 1,
                       "the partial folder exists while paused")
        process.send(SIGTERM)
        let r = process.finish()
        XCTAssertEqual(r.status, SIGTERM, r.stderr)
        XCTAssertTrue(r.stderr.contains("removed 1 unfinished output"), r.stderr)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: s).filter { $0.hasPrefix("q") }
        XCTAssertEqual(leftovers, [])
    }
}

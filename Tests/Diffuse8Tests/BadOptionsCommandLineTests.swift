import Foundation
import XCTest
import Diffuse8
import Diffuse8PNG

/// Command-line values that used to crash or run away (sizes, step counts, seed arithmetic), prompts that tried
/// to inject fields into the PNG parameters, and evaluation against the wrong model: each is a clear error
/// with a non-zero exit and no output, or (prompts) a correct file.
final class BadOptionsCommandLineTests: ExecutableTestCase {
    private var model: String { Fixtures.path("tiny-sd15") }

    func testOutOfRangeGenerateOptionsAreRefused() throws {
        let out = scratch.path + "/x.png"
        let cases: [([String], String)] = [
            (["--width", "100000"], "4096"),
            (["--height", "8192"], "4096"),
            (["--steps", "1000000"], "1...1000"),
            (["--seed", "18446744073709551615", "--batch-count", "3"], "largest seed"),
            (["--batch-count", "100000"], "1...10000"),
            (["--cfg", "nan"], "finite"),
            (["--threads", "0"], "1...1024"),
        ]
        for (options, message) in cases {
            let r = try run(["generate", "x", "--model", model] + options + ["-o", out])
            XCTAssertNotEqual(r.status, 0, "\(options)")
            XCTAssertTrue(r.stderr.contains(message), "\(options): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        }
        // The largest seed itself is fine with one image.
        let r = try run(["generate", "x", "--model", model, "--steps", "1", "--seed", "18446744073709551615", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    func testAnEmptySelfTestFilterIsRefusedBeforeAnyGPUWork() throws {
        let r = try run(["cuda-selftest", "--only", ""])
        XCTAssertEqual(r.status, 64, r.stderr)   // ArgumentParser's validation exit code, on any machine
        XCTAssertTrue(r.stderr.contains("--only takes a text"), r.stderr)
    }

    func testLineBreaksInPromptsDoNotInjectParameters() throws {
        let out = scratch.path + "/p.png"
        let r = try run(["generate", "cat\nSteps: 99, Seed: 5", "--negative-prompt", "dog\r\nNegative prompt: x", "--model", model,
                         "--steps", "1", "--seed", "3", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let text = try XCTUnwrap(PNGDecoder.read(path: out).text["parameters"])
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 3, text)
        XCTAssertEqual(lines.first, "cat Steps: 99, Seed: 5")
        XCTAssertEqual(lines.dropFirst().first, "Negative prompt: dog  Negative prompt: x")
        XCTAssertTrue(lines.last!.hasPrefix("Steps: 1, "), text)
        XCTAssertTrue(lines.last!.contains("Seed: 3,"), text)
    }

    func testEvalAgainstAnotherModelIsRefused() throws {
        let s = scratch.path
        try "a red circle\n".write(toFile: s + "/p.txt", atomically: true, encoding: .utf8)
        var r = try run(["quantize", "--model", model, "--dynamic", "-o", s + "/q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["eval", "--model", Fixtures.path("tiny-sdxl"), "--quantized", s + "/q", "--prompts", s + "/p.txt",
                     "--steps", "1", "-o", s + "/ev"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("is not made from"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: s + "/ev/report.json"))
    }

    func testEvalDeviceOptionsAreChecked() throws {
        let s = scratch.path
        try "a red circle\n".write(toFile: s + "/p.txt", atomically: true, encoding: .utf8)
        let cases: [([String], String)] = [
            (["--quantized", s + "/q", "--precision", "bf16"], "--precision applies to --device cuda"),
            (["--reference", s, "--images", s, "--device", "cuda"], "--device applies to --quantized"),
            (["--quantized", s + "/q", "--device", "tpu"], "tpu"),
        ]
        for (options, message) in cases {
            let r = try run(["eval", "--model", model, "--prompts", s + "/p.txt", "-o", s + "/ev"] + options)
            XCTAssertNotEqual(r.status, 0, "\(options)")
            XCTAssertTrue(r.stderr.contains(message), "\(options): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: s + "/ev/report.json"))
        }
    }

    func testBadEnvironmentSettingsStopWithTheAllowedValues() throws {
        for (name, value, allowed) in [("DIFFUSE8_WINOGRAD", "maybe", "on, off"), ("DIFFUSE8_PRODUCER_QUANTIZATION", "1", "on, off"),
                                       ("DIFFUSE8_FLOAT_KERNEL", "sse9", "portable, avx2, avx512"),
                                       ("DIFFUSE8_QUANTIZED_EXECUTION", "fast", "simulate, native")] {
            let r = try run(["bench", "--model", model, "--iterations", "1", "--warmup", "0", "--threads", "1"], environment: [name: value])
            XCTAssertEqual(r.status, 2, "\(name)=\(value): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("\(name)=\(value) is not allowed; allowed: \(allowed)"), r.stderr)
        }
    }

    func testCalibrateOptionLimits() throws {
        try "a\n".write(toFile: scratch.path + "/p.txt", atomically: true, encoding: .utf8)
        let base = ["calibrate", "--model", model, "--calib-prompts", scratch.path + "/p.txt", "-o", scratch.path + "/s.d8s"]
        for (options, message) in [(["--calib-steps", "5000"], "1...1000"), (["--calib-steps", "2", "--reservoir-rows", "99999999"], "0...65536")] {
            let r = try run(base + options)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains(message), r.stderr)
        }
        let r = try run(["quantize", "--model", model, "--dynamic", "--alpha-step", "1e-30", "-o", scratch.path + "/q"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("[0.001, 1]"), r.stderr)
    }
}

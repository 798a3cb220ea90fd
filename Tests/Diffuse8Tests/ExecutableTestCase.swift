import Foundation
import XCTest

/// Base of the tests that run the `diffuse8` executable as a process (built next to the test bundle by
/// `swift test`): a scratch folder per test and a `run` that returns exit status, stdout and stderr.
class ExecutableTestCase: XCTestCase {
    var executable: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("diffuse8").path
    }

    var scratch: URL!

    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw XCTSkip("diffuse8 executable not built next to the test bundle (\(executable))")
        }
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("d8-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let scratch { try? FileManager.default.removeItem(at: scratch) }
    }

    /// Runs `diffuse8 arguments` to the end. stdout and stderr are drained at the same time, so a process
    /// that writes a lot to one of them never blocks on a full pipe while the other is being read.
    @discardableResult
    func run(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = try start(arguments, environment: environment)
        return process.finish()
    }

    /// Starts `diffuse8 arguments` and returns at once; wait for its output with `RunningProcess`.
    func start(_ arguments: [String], environment: [String: String] = [:]) throws -> RunningProcess {
        try RunningProcess(executable: executable, arguments: arguments, environment: environment)
    }
}

/// A child process whose stdout and stderr are each read on their own thread as the bytes arrive.
/// Tests wait for events — a line on stderr, the exit — never for a length of time.
final class RunningProcess {
    let process = Process()
    private let condition = NSCondition()
    private var stdoutData = Data()
    private var stderrData = Data()
    private var openStreams = 2

    init(executable: String, arguments: [String], environment: [String: String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        drain(out.fileHandleForReading) { $0.stdoutData.append($1) }
        drain(err.fileHandleForReading) { $0.stderrData.append($1) }
    }

    private func drain(_ handle: FileHandle, _ append: @escaping (RunningProcess, Data) -> Void) {
        let thread = Thread { [self] in
            while true {
                let chunk = handle.availableData  // blocks until bytes arrive; empty at end of file
                condition.lock()
                if chunk.isEmpty { openStreams -= 1 } else { append(self, chunk) }
                condition.broadcast()
                condition.unlock()
                if chunk.isEmpty { return }
            }
        }
        thread.start()
    }

    /// stderr so far.
    var stderr: String {
        condition.lock()
        defer { condition.unlock() }
        return String(decoding: stderrData, as: UTF8.self)
    }

    /// Blocks until stderr contains `text` (true) or the process closed stderr without writing it (false).
    func waitForStderr(containing text: String) -> Bool {
        let needle = Data(text.utf8)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if stderrData.range(of: needle) != nil { return true }
            if openStreams == 0 { return false }
            condition.wait()
        }
    }

    /// Sends `signal` to the process.
    func send(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Waits until both streams are at their end and the process exited; returns its exit status (the signal
    /// number when a signal ended it), stdout and stderr.
    func finish() -> (status: Int32, stdout: String, stderr: String) {
        condition.lock()
        while openStreams > 0 { condition.wait() }
        let out = String(decoding: stdoutData, as: UTF8.self), err = String(decoding: stderrData, as: UTF8.self)
        condition.unlock()
        process.waitUntilExit()
        return (process.terminationStatus, out, err)
    }
}

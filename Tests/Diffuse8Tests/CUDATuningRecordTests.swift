import XCTest
#if canImport(Glibc)
import Glibc
#endif
@testable import Diffuse8

/// The tuning choices shared by the layers of a process (`CUDATuningTable`) and kept across runs
/// (`CUDATuningRecord`), driven with fake problems and timings: no GPU needed.
final class CUDATuningRecordTests: XCTestCase {
    private let identity = CUDATuningRecord.identity(deviceName: "NVIDIA H200", computeCapability: (9, 0), multiprocessors: 132,
                                                     driverVersion: 13000, cuBLASLtVersion: 130100, cuDNNVersion: 91400, kernels: "5eed")

    // MARK: Record

    func testEncodesTheDocumentedTextAndDecodesItBack() {
        let record = CUDATuningRecord(identity: identity, entries: ["int8-linear m=8192 n=640": "wgmma 128 8 ping-pong", "attention shape=64": "cudnn"])
        let expected = "diffuse8 tuning 1\n"
            + "card NVIDIA H200 | sm_90 | 132 SMs | driver 13000 | cuBLASLt 130100 | cuDNN 91400 | kernels 5eed | format 1\n"
            + "attention shape=64\tcudnn\n"
            + "int8-linear m=8192 n=640\twgmma 128 8 ping-pong\n"
        XCTAssertEqual(record.encoded(), expected)
        XCTAssertEqual(CUDATuningRecord.decode(expected, identity: identity), record)
    }

    func testARecordOfAnotherCardDriverOrLibraryIsIgnored() {
        let text = CUDATuningRecord(identity: identity, entries: ["k": "v"]).encoded()
        for other in [
            CUDATuningRecord.identity(deviceName: "NVIDIA H100 80GB HBM3", computeCapability: (9, 0), multiprocessors: 132,
                                      driverVersion: 13000, cuBLASLtVersion: 130100, cuDNNVersion: 91400, kernels: "5eed"),
            CUDATuningRecord.identity(deviceName: "NVIDIA H200", computeCapability: (9, 0), multiprocessors: 114,
                                      driverVersion: 13000, cuBLASLtVersion: 130100, cuDNNVersion: 91400, kernels: "5eed"),
            CUDATuningRecord.identity(deviceName: "NVIDIA H200", computeCapability: (9, 0), multiprocessors: 132,
                                      driverVersion: 12080, cuBLASLtVersion: 130100, cuDNNVersion: 91400, kernels: "5eed"),
            CUDATuningRecord.identity(deviceName: "NVIDIA H200", computeCapability: (9, 0), multiprocessors: 132,
                                      driverVersion: 13000, cuBLASLtVersion: 130100, cuDNNVersion: nil, kernels: "5eed"),
            CUDATuningRecord.identity(deviceName: "NVIDIA H200", computeCapability: (9, 0), multiprocessors: 132,
                                      driverVersion: 13000, cuBLASLtVersion: 130100, cuDNNVersion: 91400, kernels: "beef"),
        ] {
            XCTAssertNotEqual(other, identity)
            XCTAssertNil(CUDATuningRecord.decode(text, identity: other), other)
            // and another identity's file has another name, so both cards keep their records
            XCTAssertNotEqual(CUDATuningRecord.path(in: "/c", identity: other), CUDATuningRecord.path(in: "/c", identity: identity))
        }
    }

    func testCorruptTextIsIgnoredOrSkippedLineByLine() {
        let card = "card " + identity + "\n"
        XCTAssertNil(CUDATuningRecord.decode("", identity: identity))
        XCTAssertNil(CUDATuningRecord.decode("\u{0}\u{1}garbage\n", identity: identity))
        XCTAssertNil(CUDATuningRecord.decode("diffuse8 tuning 2\n" + card + "k\tv\n", identity: identity), "unknown format version")
        XCTAssertNil(CUDATuningRecord.decode(card + "k\tv\n", identity: identity), "no header")
        XCTAssertNil(CUDATuningRecord.decode("diffuse8 tuning 1\nk\tv\n", identity: identity), "no card line")
        // A truncated or damaged body keeps the well-formed lines only.
        let damaged = "diffuse8 tuning 1\n" + card + "good key\tgood choice\nno tab here\n\tno key\nno choice\t\ncut off\tat the e"
        XCTAssertEqual(CUDATuningRecord.decode(damaged, identity: identity)?.entries,
                       ["good key": "good choice", "cut off": "at the e"])
    }

    func testEntriesThatWouldBreakTheFormatAreNotWritten() {
        let record = CUDATuningRecord(identity: identity, entries: ["a\tb": "x", "c": "y\nz", "": "e", "ok": "fine"])
        XCTAssertEqual(CUDATuningRecord.decode(record.encoded(), identity: identity)?.entries, ["ok": "fine"])
        XCTAssertEqual(CUDATuningRecord.sanitized("line\none\ttwo\r"), "line one two ")
    }

    func testSavesAndLoadsAFileAndIgnoresACorruptOne() throws {
        let directory = try temporaryDirectory()
        defer { removeDirectory(directory) }
        XCTAssertNil(CUDATuningRecord.load(from: directory, identity: identity), "no file yet")
        let record = CUDATuningRecord(identity: identity, entries: ["conv-path n=2": "cudnn-channels-last"])
        record.save(in: directory)
        XCTAssertEqual(CUDATuningRecord.load(from: directory, identity: identity), record)

        let path = CUDATuningRecord.path(in: directory, identity: identity)
        write(path, [0xFF, 0xFE, 0x00, 0x41])  // not UTF-8
        XCTAssertNil(CUDATuningRecord.load(from: directory, identity: identity))
        write(path, Array("diffuse8 tuning 1\ncard someone else\nk\tv\n".utf8))
        XCTAssertNil(CUDATuningRecord.load(from: directory, identity: identity))

        // A folder that cannot be written leaves no record and no error.
        record.save(in: directory + "/missing/folder")
        XCTAssertNil(CUDATuningRecord.load(from: directory + "/missing/folder", identity: identity))
    }

    func testTheEnvironmentSwitchTurnsTheRecordOff() {
        let restore = saveEnvironment("DIFFUSE8_CUDA_TUNING_CACHE")
        defer { restore() }
        unsetenv("DIFFUSE8_CUDA_TUNING_CACHE")
        XCTAssertTrue(CUDATuningRecord.isEnabled)
        for off in ["off", "OFF", "0", "false", "no"] {
            setenv("DIFFUSE8_CUDA_TUNING_CACHE", off, 1)
            XCTAssertFalse(CUDATuningRecord.isEnabled, off)
        }
        setenv("DIFFUSE8_CUDA_TUNING_CACHE", "on", 1)
        XCTAssertTrue(CUDATuningRecord.isEnabled)
    }

    // MARK: Table

    /// A fake layer's call: runs `choice` (appending it to `ran`), failing for the choices in `failing`.
    private final class FakeDevice {
        var ran: [String] = []
        var measured: [String] = []
        var failing: Set<String> = []
        struct Failure: Error {}
        func run(_ choice: String) throws {
            if failing.contains(choice) { throw Failure() }
            ran.append(choice)
        }
    }

    private func decide(_ table: CUDATuningTable, _ key: String, _ device: FakeDevice,
                        timings: [String: Double] = ["a": 3, "b": 1, "c": 2], timed: Bool = true) throws -> String {
        try table.decide(key, encode: { $0 }, decode: { timings[$0] == nil ? nil : $0 }, run: device.run) {
            device.measured.append(key)
            let best = CUDATuningTable.fastest(timings.keys.sorted()) { choice in
                if device.failing.contains(choice) { throw FakeDevice.Failure() }
                return timings[choice]!
            }.best!
            return .init(best.candidate, timed: timed, ran: false)
        }
    }

    func testEachProblemIsTimedOnceWhateverTheNumberOfLayers() throws {
        let table = CUDATuningTable(), device = FakeDevice()
        for _ in 0..<5 { XCTAssertEqual(try decide(table, "m=64 n=640 k=320", device), "b") }
        XCTAssertEqual(try decide(table, "m=64 n=1280 k=320", device, timings: ["a": 1, "b": 2]), "a")
        XCTAssertEqual(try decide(table, "m=64 n=1280 k=320", device, timings: ["a": 1, "b": 2]), "a")
        XCTAssertEqual(device.measured, ["m=64 n=640 k=320", "m=64 n=1280 k=320"])
        XCTAssertEqual(device.ran, ["b", "b", "b", "b", "b", "a", "a"], "every call runs its problem's choice once")
        XCTAssertEqual(table.statistics.timed, 2)
        XCTAssertEqual(table.summary, "tuning: 2 problems timed, 0 from the record")
    }

    func testARecordedChoiceIsUsedWithoutTiming() throws {
        let table = CUDATuningTable(hints: ["k": "c"]), device = FakeDevice()
        XCTAssertEqual(try decide(table, "k", device), "c", "the recorded choice, although b times faster now")
        XCTAssertEqual(try decide(table, "k", device), "c")
        XCTAssertEqual(device.measured, [])
        XCTAssertEqual(device.ran, ["c", "c"])
        XCTAssertEqual(table.statistics.recorded, 1)
        XCTAssertEqual(table.decided("k")?.source, .recorded)
    }

    func testARecordedChoiceThatFailsOrNoLongerExistsIsTimedInstead() throws {
        let table = CUDATuningTable(hints: ["fails": "c", "gone": "wgmma 256 9 ping-pong"]), device = FakeDevice()
        device.failing = ["c"]
        XCTAssertEqual(try decide(table, "fails", device), "b")
        XCTAssertEqual(try decide(table, "gone", device), "b")
        XCTAssertEqual(device.measured, ["fails", "gone"])
        XCTAssertEqual(device.ran, ["b", "b"], "the failed recorded choice wrote nothing")
        XCTAssertEqual(table.statistics.rejected, 2)
        XCTAssertEqual(table.statistics.timed, 2)
    }

    func testTimedChoicesAreSavedButUntimedOnesAreNot() throws {
        var saved: [[String: String]] = []
        let table = CUDATuningTable(hints: ["unused": "a", "used": "c"]) { saved.append($0) }
        let device = FakeDevice()
        _ = try decide(table, "captured", device, timed: false)
        XCTAssertEqual(saved.count, 0, "an untimed choice writes nothing")
        _ = try decide(table, "used", device)
        _ = try decide(table, "timed", device)
        XCTAssertEqual(saved.last, ["unused": "a", "used": "c", "timed": "b"])
        XCTAssertEqual(table.statistics, { var s = CUDATuningTable.Statistics(); s.timed = 1; s.recorded = 1; s.untimed = 1; return s }())
        // The captured choice still serves the process.
        _ = try decide(table, "captured", device)
        XCTAssertEqual(device.measured, ["captured", "timed"])
    }

    func testAMeasurementThatAlreadyRanTheWinnerIsNotRunAgain() throws {
        let table = CUDATuningTable(), device = FakeDevice()
        try table.decide("k", encode: { $0 }, decode: { $0 }, run: device.run) {
            try device.run("first that works")
            return .init("first that works", timed: false, ran: true)
        }
        XCTAssertEqual(device.ran, ["first that works"])
    }

    func testFastestSkipsCandidatesThatFail() {
        struct NoPlan: Error {}
        let found = CUDATuningTable.fastest([4.0, 2.0, -1.0, 3.0]) { ms in
            if ms < 0 { throw NoPlan() }
            return ms
        }
        XCTAssertEqual(found.best?.candidate, 2.0)
        XCTAssertTrue(found.lastError is NoPlan)
        let none = CUDATuningTable.fastest([-1.0]) { _ -> Double in throw NoPlan() }
        XCTAssertNil(none.best)
        XCTAssertTrue(none.lastError is NoPlan)
    }

    func testASecondProcessTakesTheFirstOnesChoicesFromTheKernelCacheFolder() throws {
        let directory = try temporaryDirectory()
        let restore = [saveEnvironment("DIFFUSE8_KERNEL_CACHE"), saveEnvironment("DIFFUSE8_CUDA_TUNING_CACHE")]
        defer {
            removeDirectory(directory)
            restore.forEach { $0() }
        }
        unsetenv("DIFFUSE8_CUDA_TUNING_CACHE")
        setenv("DIFFUSE8_KERNEL_CACHE", directory, 1)
        let first = CUDATuningTable.onDisk(identity: identity), device = FakeDevice()
        XCTAssertEqual(try decide(first, "k", device), "b")
        XCTAssertEqual(CUDATuningRecord.load(from: directory, identity: identity)?.entries, ["k": "b"])

        let second = CUDATuningTable.onDisk(identity: identity)
        XCTAssertEqual(try decide(second, "k", device, timings: ["a": 1, "b": 2]), "b", "the recorded choice")
        XCTAssertEqual(device.measured, ["k"])
        XCTAssertEqual(second.summary, "tuning: 0 problems timed, 1 from the record")

        setenv("DIFFUSE8_CUDA_TUNING_CACHE", "off", 1)
        let off = CUDATuningTable.onDisk(identity: identity)
        XCTAssertEqual(try decide(off, "k", device, timings: ["a": 1, "b": 2]), "a", "measured again")
        XCTAssertEqual(try decide(off, "other", device), "b")
        XCTAssertEqual(CUDATuningRecord.load(from: directory, identity: identity)?.entries, ["k": "b"], "nothing written")
    }

    // MARK: Keys and choices of the CUDA paths

    func testThe8BitGEMMKeyNamesEverythingTheChoiceDependsOn() {
        func key(format: QuantizedFormat = .int8, rows: Int = 8192, bias: Bool = true, residual: Bool = false,
                 type: CUDADataType = .float16, wgmma: Bool = true) -> String {
            CUDAKernels.eightBitLinearTuningKey(format: format, rows: rows, outFeatures: 640, inFeatures: 320, bias: bias,
                                                residual: residual, storageType: type, wgmma: wgmma)
        }
        XCTAssertEqual(key(), "int8-linear m=8192 n=640 k=320 bias=1 residual=0 output=float16 wgmma=1")
        XCTAssertEqual(key(format: .fp8), "fp8-linear m=8192 n=640 k=320 bias=1 residual=0 output=float16 wgmma=1")
        let variations = [key(format: .fp8), key(rows: 2048), key(bias: false), key(residual: true), key(type: .bfloat16), key(wgmma: false)]
        XCTAssertEqual(Set(variations + [key()]).count, 7)
    }

    func testFP8LayersCompeteOnlyOnPathsThatRunFP8() {
        let int8 = CUDAEightBitLinear.GEMMPath.candidates(.int8, depth: 5120, wgmma: true)
        let fp8 = CUDAEightBitLinear.GEMMPath.candidates(.fp8, depth: 640, wgmma: true)
        XCTAssertTrue(int8.contains(.cuDNN))
        XCTAssertEqual(int8.count, CUDAKernels.WarpSpecializedGEMM.variants.count + 2)
        XCTAssertFalse(fp8.contains(.cuDNN), "cuDNN's fused matmul is INT8 only")
        XCTAssertEqual(fp8.count, CUDAKernels.WarpSpecializedGEMM.variants.count + 1)
        // FP8 sums over 5120 inputs keep FP32 totals, which leave no registers in the tiles whose consumers hold 128
        // accumulators a thread (128×256 cooperative, 128×128 ping-pong): cuBLASLt and the other variants remain
        XCTAssertEqual(CUDAEightBitLinear.GEMMPath.candidates(.fp8, depth: 5120, wgmma: true).count,
                       CUDAKernels.WarpSpecializedGEMM.variants.count - 1)
        XCTAssertEqual(CUDAEightBitLinear.GEMMPath.candidates(.fp8, depth: 640, wgmma: false), [.cuBLASLt])
        XCTAssertEqual(CUDAEightBitLinear.GEMMPath.cuBLASLt.description(for: .fp8), "cuBLASLt FP8 E4M3")
    }

    func testPathChoicesRoundTripAndUnknownOnesAreRejected() {
        let paths: [CUDAEightBitLinear.GEMMPath] = CUDAKernels.WarpSpecializedGEMM.variants.map { .warpSpecialized($0) } + [.cuDNN, .cuBLASLt]
        for path in paths { XCTAssertEqual(CUDAEightBitLinear.GEMMPath(tuningCode: path.tuningCode), path) }
        XCTAssertEqual(Set(paths.map(\.tuningCode)).count, paths.count)
        for unknown in ["wgmma 256 3 ping-pong", "cuBLASLt", "", "cudnn "] { XCTAssertNil(CUDAEightBitLinear.GEMMPath(tuningCode: unknown)) }

        let geglu = CUDAEightBitLinear.GEGLUPath.candidates(.int8, depth: 1280)
        XCTAssertEqual(geglu.count, 1 + CUDAKernels.WarpSpecializedGEMM.gegluVariants.count)
        for path in geglu { XCTAssertEqual(CUDAEightBitLinear.GEGLUPath(tuningCode: path.tuningCode), path) }
        XCTAssertEqual(Set(geglu.map(\.tuningCode)).count, geglu.count)
        // the 64-column tile's 32 outputs would not fill a 64-column store box
        XCTAssertNil(CUDAEightBitLinear.GEGLUPath(tuningCode: "fused wgmma 64 10 ping-pong"))
        XCTAssertNil(CUDAEightBitLinear.GEGLUPath(tuningCode: "wgmma 128 8 ping-pong"))

        XCTAssertEqual(CUDAEightBitConvolution.Path(tuningCode: "8bit"), .eightBit(.fusedEpilogue))
        let slower = CUDAEightBitConvolution.Path.sixteenBit("16 bit measured faster (12.0 vs 15.1 µs)")
        XCTAssertEqual(CUDAEightBitConvolution.Path(tuningCode: slower.tuningCode), slower)
        XCTAssertEqual(CUDAEightBitConvolution.Path.sixteenBit("no plan:\nline two").tuningCode, "16bit no plan: line two")
        XCTAssertNil(CUDAEightBitConvolution.Path(tuningCode: "4bit"))

        for path in [CUDAKernels.ConvolutionPath.cudnn, .im2colGEMM, .cudnnChannelsLast] {
            XCTAssertEqual(CUDAKernels.ConvolutionPath(tuningCode: path.tuningCode), path)
        }
        for kernel in [CUDAKernels.AttentionKernel.simple, .pipelined, .cudnn] {
            XCTAssertEqual(CUDAKernels.AttentionKernel(tuningCode: kernel.tuningCode), kernel)
        }
        XCTAssertNil(CUDAKernels.AttentionKernel(tuningCode: "automatic"))

        // A cuBLASLt heuristic result (96 bytes): the first 64 are the algorithm, the rest (workspace, state, waves) are not kept.
        let result = (0..<96).map { UInt8(($0 * 37 + 11) % 256) }
        let algorithm = CUDAMatmul.algorithmCode(result)
        XCTAssertEqual(algorithm, "algo 0b30557a9fc4e90e33587da2c7ec1136" + "5b80a5caef14395e83a8cdf2173c6186"
                       + "abd0f51a3f6489aed3f81d42678cb1d6" + "fb20456a8fb4d9fe23486d92b7dc0126")
        XCTAssertEqual(CUDAMatmul.algorithm(algorithm), Array(result.prefix(64)))
        XCTAssertNil(CUDAMatmul.algorithm("algo 0b30"), "too short")
        XCTAssertNil(CUDAMatmul.algorithm(algorithm.uppercased()))
        XCTAssertNil(CUDAMatmul.algorithm("candidate 3"))
        XCTAssertEqual(CUDNNEightBitGraphs.Form(tuningCode: CUDNNEightBitGraphs.Form.sums.tuningCode), .sums)
        XCTAssertEqual(CUDNNEightBitGraphs.tuningCode(form: .fusedEpilogue, index: 2), "fused 2")
        let code = CUDNNConvolution.tuningCode(algorithm: 1, mathType: 1, workspaceBytes: 4096)
        XCTAssertEqual(CUDNNConvolution.decodeTuningCode(code)?.workspaceBytes, 4096)
        XCTAssertNil(CUDNNConvolution.decodeTuningCode("algo 1 math 1 workspace -5"))
        XCTAssertNil(CUDNNConvolution.decodeTuningCode("algo x math 1 workspace 0"))
    }

    func testConvolutionKeysSeparateGeometryFormatAndOutputType() {
        let shape = CUDNNEightBitGraphs.Shape(n: 2, c: 320, h: 64, w: 64, o: 320, kh: 3, kw: 3, stride: 1, padding: 1, format: .int8,
                                              hasBias: true, outputType: .float16)
        XCTAssertEqual(CUDAKernels.eightBitConvolutionTuningKey(shape),
                       "8bit-conv-path n=2 c=320 h=64 w=64 o=320 k=3x3 stride=1 padding=1 format=int8 bias=1 residual=0 output=float16")
        var strided = shape
        strided.stride = 2
        var fp8 = shape
        fp8.format = .fp8
        var matmul = shape
        matmul.isMatmul = true
        let keys = [shape, strided, fp8, matmul].map(CUDNNEightBitGraphs.tuningKey)
        XCTAssertEqual(Set(keys).count, 4)
        XCTAssertNotEqual(CUDAKernels.eightBitConvolutionTuningKey(shape), CUDNNEightBitGraphs.tuningKey(shape),
                          "the path choice and the plan choice are separate problems")
    }

    // MARK: Helpers

    /// Puts the variable back as it was (set or not) when called.
    private func saveEnvironment(_ name: String) -> () -> Void {
        let value = getenv(name).map { String(cString: $0) }
        return {
            if let value { setenv(name, value, 1) } else { unsetenv(name) }
        }
    }

    private func temporaryDirectory() throws -> String {
        var template = Array("/tmp/diffuse8-tuning-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw XCTSkip("no temporary folder") }
        return String(cString: made)
    }

    private func removeDirectory(_ path: String) {
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name != "." && name != ".." { unlink(path + "/" + name) }
            }
            closedir(directory)
        }
        rmdir(path)
    }

    private func write(_ path: String, _ bytes: [UInt8]) {
        guard let file = fopen(path, "wb") else { return XCTFail("cannot write \(path)") }
        fwrite(bytes, 1, bytes.count, file)
        fclose(file)
    }
}

import Foundation
import XCTest
@testable import Diffuse8

/// The writer against files written by the Python `safetensors` library, round trips through the
/// reader, and the atomic file writer it uses.
final class SafetensorsWriterTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws { directory = try FormatsTestFiles.make() }
    override func tearDownWithError() throws { FormatsTestFiles.remove(directory) }

    private func bytes(at path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    /// Re-adding every tensor of the Python-written file must give the same file, byte for byte:
    /// same tensor order, same JSON, same padding.
    func testSameTensorsGiveTheFilePythonWrites() throws {
        let path = Fixtures.path("formats/python_dtypes.safetensors")
        let python = try SafetensorsFile(path: path)
        var writer = SafetensorsWriter(metadata: python.metadata)
        for name in python.tensorNames.reversed() {
            let entry = try python.entry(named: name)
            try writer.add(name, dtype: entry.dtype, shape: entry.shape, bytes: Array(try python.rawBytes(named: name)))
        }
        let written = writer.serialized()
        let expected = try bytes(at: path)
        XCTAssertEqual(written.count, expected.count)
        XCTAssertEqual(String(decoding: written.prefix(python.dataStart), as: UTF8.self),
                       String(decoding: expected.prefix(python.dataStart), as: UTF8.self))
        XCTAssertEqual(written, expected)
    }

    func testF16RoundingMatchesTorchHalf() throws {
        let python = try SafetensorsFile(path: Fixtures.path("formats/python_dtypes.safetensors"))
        var writer = SafetensorsWriter()
        try writer.add("x", try python.tensor(named: "f16_rounding_source"), as: .f16)
        let got = writer.items["x"]!.bytes
        let want = Array(try python.rawBytes(named: "f16_rounding_half"))
        XCTAssertEqual(got.count, want.count)
        for i in stride(from: 0, to: want.count, by: 2) where got[i] != want[i] || got[i + 1] != want[i + 1] {
            XCTFail("element \(i / 2): Swift \(got[i + 1]),\(got[i]) torch \(want[i + 1]),\(want[i])")
        }
    }

    func testBF16RoundingMatchesTorch() throws {
        let python = try SafetensorsFile(path: Fixtures.path("formats/python_dtypes.safetensors"))
        var writer = SafetensorsWriter()
        try writer.add("x", try python.tensor(named: "f32"), as: .bf16)
        XCTAssertEqual(writer.items["x"]!.bytes, Array(try python.rawBytes(named: "bf16")))
        XCTAssertEqual(SafetensorsWriter.bfloat16Bits(1 + 1.0 / 256), 0x3F80)           // tie → even
        XCTAssertEqual(SafetensorsWriter.bfloat16Bits(1 + 3.0 / 256), 0x3F82)           // tie → even (up)
        XCTAssertEqual(SafetensorsWriter.bfloat16Bits(.infinity), 0x7F80)
    }

    func testRoundTripThroughAFile() throws {
        var writer = SafetensorsWriter(metadata: ["note": "quote \" backslash \\ newline \n tab \t ctl \u{1} é 中"])
        let a = Tensor(shape: [2, 3], scalars: [1, -2, 3.5, 0.25, 1e-3, -7])
        try writer.add("b.weight", a)
        try writer.add("a.half", a, as: .f16)
        try writer.add("codes", dtype: .i8, shape: [4], bytes: [0x80, 0xFF, 0, 0x7F])
        try writer.add("fp8", dtype: .f8E4M3, shape: [2], bytes: [0x7E, 0x38])
        try writer.add("empty", dtype: .f32, shape: [0], bytes: [])
        let path = directory + "/round.safetensors"
        try writer.write(to: path)

        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(file.metadata, writer.metadata)
        XCTAssertEqual(file.tensorNames, ["a.half", "b.weight", "codes", "empty", "fp8"])
        XCTAssertEqual(file.dataStart % 8, 0)
        XCTAssertEqual(try file.tensor(named: "b.weight").scalars, a.scalars)
        XCTAssertEqual(try file.tensor(named: "b.weight").shape, [2, 3])
        XCTAssertEqual(try file.tensor(named: "a.half").scalars, a.scalars.map { Float(Float16($0)) })
        XCTAssertEqual(try file.tensor(named: "codes").scalars, [-128, -1, 0, 127])
        XCTAssertEqual(try file.tensor(named: "fp8").scalars, [448, 1])
        XCTAssertEqual(try file.entry(named: "empty").shape, [0])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["round.safetensors"])
    }

    /// `Tests/Fixtures/formats/swift_written.safetensors` is what this writer makes of the tensors below;
    /// `tools/reference/safetensors_cases.py` checks that Python loads it with the same values.
    /// Regenerate with `DIFFUSE8_UPDATE_FORMAT_FIXTURES=1 swift test --filter testSwiftWrittenFixtureIsCurrent`.
    func testSwiftWrittenFixtureIsCurrent() throws {
        var writer = SafetensorsWriter(metadata: ["format": "pt", "writer": "diffuse8"])
        try writer.add("weight", Tensor(shape: [2, 3], scalars: [1, -2, 3.5, 0.25, 1e-3, -7]))
        try writer.add("bias.half", Tensor(shape: [4], scalars: [0.1, -0.2, 65504, 1e-7]), as: .f16)
        try writer.add("codes", dtype: .i8, shape: [4], bytes: [0x80, 0xFF, 0, 0x7F])
        let path = Fixtures.path("formats/swift_written.safetensors")
        if ProcessInfo.processInfo.environment["DIFFUSE8_UPDATE_FORMAT_FIXTURES"] != nil {
            try writer.write(to: path)
        }
        XCTAssertEqual(writer.serialized(), try bytes(at: path),
                       "the writer's output changed; regenerate the fixture (see this test's comment) and rerun safetensors_cases.py")
    }

    func testAddRejectsInconsistentTensors() throws {
        var writer = SafetensorsWriter()
        XCTAssertThrowsError(try writer.add("w", dtype: .f16, shape: [2, 3], bytes: [UInt8](repeating: 0, count: 8))) {
            XCTAssertTrue("\($0)".contains("'w'") && "\($0)".contains("12"), "\($0)")
        }
        try writer.add("w", dtype: .u8, shape: [1], bytes: [1])
        XCTAssertThrowsError(try writer.add("w", dtype: .u8, shape: [1], bytes: [1])) {
            XCTAssertTrue("\($0)".contains("twice"), "\($0)")
        }
        XCTAssertThrowsError(try writer.add("__metadata__", dtype: .u8, shape: [1], bytes: [1]))
        XCTAssertThrowsError(try writer.add("q", Tensor(shape: [1], scalars: [1]), as: .i8))
    }

    // MARK: - AtomicFileWriter

    func testAtomicWriteReplacesTheFileAndLeavesNoTemporary() throws {
        let path = directory + "/out.bin"
        try AtomicFileWriter.write([1, 2, 3], to: path)
        try AtomicFileWriter.write([4, 5], to: path)
        XCTAssertEqual(try bytes(at: path), [4, 5])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["out.bin"])
    }

    func testAtomicWriteFailureKeepsTheOldFile() throws {
        struct Interrupted: Error {}
        let path = directory + "/out.bin"
        try AtomicFileWriter.write([1, 2, 3], to: path)
        XCTAssertThrowsError(try AtomicFileWriter.write(to: path) { sink in
            try sink.write([9, 9, 9, 9])
            throw Interrupted()
        }) { XCTAssertTrue($0 is Interrupted) }
        XCTAssertEqual(try bytes(at: path), [1, 2, 3])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["out.bin"])
    }

    func testAtomicWriteIntoMissingFolderNamesThePath() throws {
        let path = directory + "/missing/out.png"
        XCTAssertThrowsError(try AtomicFileWriter.write([1], to: path)) { error in
            XCTAssertEqual((error as? FileWriteError)?.path, path)
            XCTAssertTrue("\(error)".contains(path) && "\(error)".contains("must exist"), "\(error)")
        }
        // A regular file where a folder should be.
        try AtomicFileWriter.write([1], to: directory + "/plain")
        XCTAssertThrowsError(try AtomicFileWriter.write([1], to: directory + "/plain/out.png")) {
            XCTAssertTrue("\($0)".contains(self.directory + "/plain/out.png"), "\($0)")
        }
        XCTAssertThrowsError(try AtomicFileWriter.write([1], to: directory + "/")) {
            XCTAssertTrue("\($0)".contains("folder"), "\($0)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["plain"])
    }
}

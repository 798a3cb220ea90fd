import Foundation
import XCTest
@testable import Diffuse8

/// The memory-mapped reader against files written by the Python `safetensors` library
/// (`tools/reference/safetensors_cases.py`), with torch's `.float()` conversion as the reference.
final class SafetensorsReaderTests: XCTestCase {
    func testEveryDTypeConvertsToFloat32LikeTorch() throws {
        let file = try SafetensorsFile(path: Fixtures.path("formats/python_dtypes.safetensors"))
        let reference = try SafetensorsFile(path: Fixtures.path("formats/python_dtypes_f32.safetensors"))
        XCTAssertEqual(file.tensorNames, reference.tensorNames)
        XCTAssertEqual(file.tensorNames.count, 16)
        for name in file.tensorNames {
            let got = try file.tensor(named: name)
            let want = try reference.tensor(named: name)
            XCTAssertEqual(got.shape, want.shape, name)
            for (i, (g, w)) in zip(got.scalars, want.scalars).enumerated() {
                if w.isNaN {
                    XCTAssertTrue(g.isNaN, "\(name)[\(i)]: expected NaN, got \(g)")
                } else {
                    XCTAssertEqual(g.bitPattern, w.bitPattern, "\(name)[\(i)]: got \(g), torch gives \(w)")
                }
            }
        }
    }

    func testHeaderEntriesMetadataAndRawBytes() throws {
        let file = try SafetensorsFile(path: Fixtures.path("formats/python_dtypes.safetensors"))
        XCTAssertEqual(file.metadata, ["format": "pt"])
        let expected: [String: SafetensorsDType] = [
            "f32": .f32, "f16": .f16, "bf16": .bf16, "f64": .f64, "i64": .i64, "i32": .i32, "i16": .i16,
            "i8": .i8, "u8": .u8, "bool": .bool, "f8_e4m3_all": .f8E4M3, "f8_e5m2_all": .f8E5M2,
        ]
        for (name, dtype) in expected { XCTAssertEqual(try file.entry(named: name).dtype, dtype, name) }
        XCTAssertEqual(try file.entry(named: "scalar").shape, [])
        XCTAssertEqual(try file.tensor(named: "scalar").scalars, [2.5])
        XCTAssertEqual(try file.entry(named: "empty").shape, [0, 3])
        XCTAssertEqual(try file.tensor(named: "empty").count, 0)

        let raw = try file.rawBytes(named: "f8_e4m3_all")
        XCTAssertEqual(raw.count, 256)
        XCTAssertEqual(Array(raw), (0..<256).map { UInt8($0) })
        let half = try file.rawBytes(named: "f16")
        XCTAssertEqual(half.count, 12)
        XCTAssertEqual(half.loadUnaligned(fromByteOffset: 0, as: UInt16.self), 0x3800)  // 0.5 in binary16
        XCTAssertEqual(SafetensorsDType.f8E4M3.byteSize, 1)
        XCTAssertEqual(SafetensorsDType.bf16.byteSize, 2)
        XCTAssertEqual(SafetensorsDType.f64.byteSize, 8)
    }

    /// Values straight from the OCP 8-bit floating point spec (E4M3: bias 7, no infinities).
    func testE4M3DecodingFollowsTheOCPSpec() {
        let decode = FloatDecoding.e4m3ToFloat
        XCTAssertEqual(decode(0x7E), 448)             // S.1111.110, the largest finite
        XCTAssertTrue(decode(0x7F).isNaN)             // S.1111.111
        XCTAssertTrue(decode(0xFF).isNaN)
        XCTAssertEqual(decode(0x78), 256)             // exponent 15 is finite
        XCTAssertEqual(decode(0x38), 1)               // exponent 7 = bias
        XCTAssertEqual(decode(0x08), 0.015625)        // smallest normal 2^-6
        XCTAssertEqual(decode(0x01), 0.001953125)     // smallest subnormal 2^-9
        XCTAssertEqual(decode(0x07), 7 * 0.001953125) // largest subnormal
        XCTAssertEqual(decode(0x80).bitPattern, (-0.0 as Float).bitPattern)
        XCTAssertEqual(decode(0xC4), -3)
    }

    func testTinyPipelineWeightsOpen() throws {
        let unet = try SafetensorsFile(path: Fixtures.path("tiny-sd15/unet/diffusion_pytorch_model.safetensors"))
        XCTAssertTrue(unet.entries.values.allSatisfy { $0.dtype == .f16 })
        let weight = try unet.tensor(named: "conv_in.weight")
        XCTAssertEqual(weight.shape.count, 4)
        XCTAssertTrue(weight.scalars.allSatisfy { $0.isFinite })
    }

    /// A 5 GB tensor in a sparse file: opening maps it instead of reading it, so this is instant and
    /// needs no memory for the data.
    func testHugeFileIsMappedNotRead() throws {
        let directory = try FormatsTestFiles.make()
        defer { FormatsTestFiles.remove(directory) }
        let size = 5_000_000_000
        var writer = SafetensorsWriter()
        try writer.add("small", dtype: .u8, shape: [2], bytes: [7, 9])
        var header = Array(String(decoding: writer.headerBytes().dropFirst(8), as: UTF8.self)
            .replacingOccurrences(of: "}}", with: "},\"big\":{\"dtype\":\"U8\",\"shape\":[\(size)],\"data_offsets\":[2,\(size + 2)]}}").utf8)
        header += [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8)
        let path = directory + "/huge.safetensors"
        let prefix = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header + [7, 9]
        try FormatsTestFiles.write(prefix, to: path)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: UInt64(prefix.count + size))
        try handle.close()

        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(file.fileSize, prefix.count + size)
        XCTAssertEqual(try file.tensor(named: "small").scalars, [7, 9])
        let big = try file.rawBytes(named: "big")
        XCTAssertEqual(big.count, size)
        XCTAssertEqual(big[size - 1], 0)
    }

    func testUnknownTensorNameNamesFileAndTensor() throws {
        let path = Fixtures.path("formats/python_dtypes.safetensors")
        let file = try SafetensorsFile(path: path)
        XCTAssertThrowsError(try file.tensor(named: "nope")) { error in
            let e = error as? SafetensorsError
            XCTAssertEqual(e?.tensor, "nope")
            XCTAssertTrue(e?.description.contains(path) == true, "\(error)")
        }
    }

    func testMissingFileIsAClearError() {
        XCTAssertThrowsError(try SafetensorsFile(path: "/nonexistent/x.safetensors")) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/x.safetensors"), "\(error)")
            XCTAssertTrue("\(error)".contains("cannot open"), "\(error)")
        }
    }
}

import XCTest
@testable import Diffuse8

/// Broken and hostile safetensors files, built byte by byte: each must be rejected when opened with a
/// `SafetensorsError` that names the file and, where there is one, the tensor.
final class SafetensorsMaliciousTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws {
        directory = try FormatsTestFiles.make()
    }

    override func tearDownWithError() throws {
        FormatsTestFiles.remove(directory)
    }

    /// A file: 8-byte length (the header's own unless `declaredLength` is given), header, data.
    private func file(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil, name: String = #function) throws -> String {
        let headerBytes = Array(header.utf8)
        let length = declaredLength ?? UInt64(headerBytes.count)
        var bytes = withUnsafeBytes(of: length.littleEndian) { Array($0) }
        bytes += headerBytes + data
        return try raw(bytes, name: name)
    }

    private func raw(_ bytes: [UInt8], name: String = #function) throws -> String {
        let path = directory + "/" + name.filter { $0.isLetter || $0.isNumber } + ".safetensors"
        try FormatsTestFiles.write(bytes, to: path)
        return path
    }

    private func assertRejected(_ path: String, tensor: String?, mentioning words: [String],
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafetensorsFile(path: path), file: file, line: line) { error in
            guard let e = error as? SafetensorsError else {
                return XCTFail("not a SafetensorsError: \(error)", file: file, line: line)
            }
            XCTAssertEqual(e.file, path, file: file, line: line)
            XCTAssertTrue(e.description.contains(path), "\(e)", file: file, line: line)
            XCTAssertEqual(e.tensor, tensor, "\(e)", file: file, line: line)
            if let tensor { XCTAssertTrue(e.description.contains("'\(tensor)'"), "\(e)", file: file, line: line) }
            for word in words { XCTAssertTrue(e.description.contains(word), "'\(word)' missing from: \(e)", file: file, line: line) }
        }
    }

    func testShorterThanTheLengthField() throws {
        assertRejected(try raw([1, 2, 3]), tensor: nil, mentioning: ["3 bytes", "too short"])
        assertRejected(try raw([]), tensor: nil, mentioning: ["0 bytes"])
    }

    func testHeaderCutOff() throws {
        let header = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: file(header: header, data: [0, 0, 128, 63]))))
        assertRejected(try raw(Array(bytes.prefix(20))), tensor: nil, mentioning: ["runs past the end"])
    }

    func testHeaderLengthPastEndOfFile() throws {
        assertRejected(try file(header: "{}", declaredLength: 1000), tensor: nil, mentioning: ["1000", "runs past the end"])
        assertRejected(try file(header: "{}", declaredLength: UInt64.max), tensor: nil, mentioning: ["limit"])
    }

    func testInvalidJSON() throws {
        assertRejected(try file(header: #"{"w": {"dtype": "F32""#), tensor: nil, mentioning: ["not valid JSON"])
        assertRejected(try file(header: "[1, 2]"), tensor: nil, mentioning: ["not an object"])
    }

    func testMissingOrMistypedFields() throws {
        assertRejected(try file(header: #"{"w":{"shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]),
                       tensor: "w", mentioning: ["no 'dtype'"])
        assertRejected(try file(header: #"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]),
                       tensor: "w", mentioning: ["no 'shape'"])
        assertRejected(try file(header: #"{"w":{"dtype":"F32","shape":[1]}}"#, data: [0, 0, 0, 0]),
                       tensor: "w", mentioning: ["no 'data_offsets'"])
        assertRejected(try file(header: #"{"w":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]),
                       tensor: "w", mentioning: ["not a string"])
        assertRejected(try file(header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#, data: [0, 0, 0, 0]),
                       tensor: "w", mentioning: ["not a pair"])
        assertRejected(try file(header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, data: [0, 0, 0, 0]),
                       tensor: "w", mentioning: ["begin after"])
        assertRejected(try file(header: #"{"w":[1]}"#), tensor: "w", mentioning: ["not an object"])
        assertRejected(try file(header: #"{"__metadata__":{"k":1}}"#), tensor: nil, mentioning: ["__metadata__", "'k'"])
    }

    func testOverlappingOffsets() throws {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        assertRejected(try file(header: header, data: [UInt8](repeating: 0, count: 12)),
                       tensor: "b", mentioning: ["overlap", "'a'"])
    }

    func testOffsetsOutsideTheFile() throws {
        let header = #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
        assertRejected(try file(header: header, data: [0, 0, 0, 0]), tensor: "w", mentioning: ["run past the end", "4-byte data region"])
        let huge = #"{"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551616]}}"#
        assertRejected(try file(header: huge, data: [0]), tensor: "w", mentioning: ["data_offsets"])
    }

    func testByteCountDisagreesWithShapeAndDType() throws {
        let header = #"{"w":{"dtype":"F16","shape":[2,3],"data_offsets":[0,8]}}"#
        assertRejected(try file(header: header, data: [UInt8](repeating: 0, count: 8)),
                       tensor: "w", mentioning: ["holds 8 bytes", "[2, 3]", "F16", "12 bytes"])
    }

    func testUnknownDType() throws {
        let header = #"{"w":{"dtype":"F4_E2M1","shape":[2],"data_offsets":[0,1]}}"#
        assertRejected(try file(header: header, data: [0]), tensor: "w", mentioning: ["unknown dtype 'F4_E2M1'"])
    }

    func testNegativeOrNonIntegerShape() throws {
        for shape in ["[-1]", "[1.5]", "[\"2\"]", "[null]", "3", "[1e300]"] {
            let header = #"{"w":{"dtype":"U8","shape":"# + shape + #","data_offsets":[0,1]}}"#
            assertRejected(try file(header: header, data: [0], name: "shape\(shape)"), tensor: "w", mentioning: ["shape"])
        }
    }

    func testElementCountOverflow() throws {
        let header = #"{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#
        assertRejected(try file(header: header, data: [UInt8](repeating: 0, count: 8)), tensor: "w", mentioning: ["too many elements"])
    }
}

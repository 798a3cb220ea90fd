import Foundation
import XCTest
@testable import Diffuse8
@testable import Diffuse8PNG

/// The PNG encoder, checked by decoding its output with the library's `PNGDecoder` (chunk parser, CRC check,
/// CompressNIO inflate, unfiltering); the decoder itself is checked on PNGs PIL wrote
/// (`tools/reference/safetensors_cases.py`, `tools/reference/png_cases.py`; see also `PNGDecoderTests`).
final class PNGEncoderTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws { directory = try FormatsTestFiles.make() }
    override func tearDownWithError() throws { FormatsTestFiles.remove(directory) }

    /// The pixel formula of safetensors_cases.py.
    private func pixelValue(_ x: Int, _ y: Int, _ c: Int) -> UInt8 { UInt8((x * 37 + y * 91 + c * 53 + 7) % 256) }

    private func fixture(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("formats/" + name))))
    }

    func testDecoderReadsPILFiles() throws {
        let rgbFile = try PNGDecoder.decode(fixture("pil_rgb.png"))
        let rgb = rgbFile.image
        XCTAssertEqual([rgb.width, rgb.height, rgb.channels], [5, 3, 3])
        var expected: [UInt8] = []
        for y in 0..<3 { for x in 0..<5 { for c in 0..<3 { expected.append(pixelValue(x, y, c)) } } }
        XCTAssertEqual(rgb.pixels, expected)
        XCTAssertEqual(rgbFile.text["parameters"], "a red circle\nSteps: 2, Seed: 1")

        let grey = try PNGDecoder.decode(fixture("pil_grey.png")).image
        XCTAssertEqual([grey.width, grey.height, grey.channels], [7, 2, 1])
        XCTAssertEqual(grey.pixels, (0..<2).flatMap { y in (0..<7).map { x in pixelValue(x, y, 0) } })
        XCTAssertEqual(CRC32.checksum(Array("IEND".utf8)), 0xAE42_6082)  // the well-known IEND CRC
    }

    func testRGBRoundTripWithText() throws {
        // A gradient plus noise exercises every filter choice.
        let (width, height) = (37, 23)
        var pixels: [UInt8] = []
        var state: UInt32 = 12345
        for y in 0..<height {
            for x in 0..<width {
                for c in 0..<3 {
                    state = state &* 1_664_525 &+ 1_013_904_223
                    pixels.append(y < 8 ? UInt8((x * 7 + c * 40) & 0xFF) : (y < 16 ? UInt8((x + y * 3) & 0xFF) : UInt8(state >> 24)))
                }
            }
        }
        let parameters = "a red circle above a blue square\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, CFG scale: 7.5, Seed: 42, Size: 37x23, Model: tiny"
        let file = try PNGEncoder.encode(pixels: pixels, width: width, height: height,
                                         text: [("parameters", parameters), ("Software", "diffuse8 café")])
        let decoded = try PNGDecoder.decode(file)
        XCTAssertEqual([decoded.image.width, decoded.image.height, decoded.image.channels], [width, height, 3])
        XCTAssertEqual(decoded.image.pixels, pixels)
        XCTAssertEqual(decoded.text, ["parameters": parameters, "Software": "diffuse8 café"])
        XCTAssertEqual(decoded.chunkTypes, ["IHDR", "tEXt", "tEXt", "IDAT", "IEND"])
        XCTAssertEqual(Array(file.prefix(8)), PNGEncoder.signature)
    }

    func testGreyAndRGBA() throws {
        let grey = PixelImage(width: 3, height: 4, channels: 1, pixels: (0..<12).map { UInt8($0 * 20) })
        let decodedGrey = try PNGDecoder.decode(PNGEncoder.encode(grey)).image
        XCTAssertEqual(decodedGrey, grey)
        let rgba = PixelImage(width: 2, height: 2, channels: 4, pixels: (0..<16).map { UInt8(255 - $0 * 9) })
        XCTAssertEqual(try PNGDecoder.decode(PNGEncoder.encode(rgba)).image, rgba)
    }

    func testUnicodeTextGoesToITXt() throws {
        let prompt = "a cat 🐈 under a 桜 tree"
        let file = try PNGEncoder.encode(pixels: [1, 2, 3], width: 1, height: 1, text: [("parameters", prompt)])
        let decoded = try PNGDecoder.decode(file)
        XCTAssertEqual(decoded.text["parameters"], prompt)
        XCTAssertEqual(decoded.chunkTypes, ["IHDR", "iTXt", "IDAT", "IEND"])
    }

    func testInvalidInputsAreRejected() {
        XCTAssertThrowsError(try PNGEncoder.encode(pixels: [1, 2], width: 1, height: 1))
        XCTAssertThrowsError(try PNGEncoder.encode(pixels: [1, 2, 3], width: 1, height: 1, text: [("", "x")]))
        XCTAssertThrowsError(try PNGEncoder.encode(pixels: [1, 2, 3], width: 1, height: 1, text: [("key 桜", "x")]))
        XCTAssertThrowsError(try PNGEncoder.encode(pixels: [1, 2, 3], width: 1, height: 1, text: [("k", "a\u{0}b")]))
    }

    func testWriteIsAtomicAndReportsBadPaths() throws {
        let image = PixelImage(width: 2, height: 1, channels: 3, pixels: [255, 0, 0, 0, 0, 255])
        let path = directory + "/out.png"
        try PNGEncoder.write(image, text: [("parameters", "x")], to: path)
        XCTAssertEqual(try PNGDecoder.read(path: path).image, image)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["out.png"])
        XCTAssertThrowsError(try PNGEncoder.write(image, to: directory + "/no/such/out.png")) {
            XCTAssertTrue("\($0)".contains(self.directory + "/no/such/out.png"), "\($0)")
        }
    }
}

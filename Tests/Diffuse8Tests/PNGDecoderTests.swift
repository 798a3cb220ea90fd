import Foundation
import XCTest
import Diffuse8
import Diffuse8PNG

/// `PNGDecoder` on PNGs written by PIL (`tools/reference/png_cases.py`: RGBA, grey+alpha, 8- and 4-bit palette)
/// and on files it must refuse (interlaced, 16-bit, damaged). RGB and grey PIL files are in `PNGEncoderTests`.
final class PNGDecoderTests: XCTestCase {
    /// The pixel formula of png_cases.py.
    private func pixelValue(_ x: Int, _ y: Int, _ c: Int) -> UInt8 { UInt8((x * 37 + y * 91 + c * 53 + 7) % 256) }

    private func expected(_ width: Int, _ height: Int, _ channels: Int) -> [UInt8] {
        var pixels: [UInt8] = []
        for y in 0..<height { for x in 0..<width { for c in 0..<channels { pixels.append(pixelValue(x, y, c)) } } }
        return pixels
    }

    private func fixture(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("formats/" + name))))
    }

    func testRGBA() throws {
        let image = try PNGDecoder.decode(fixture("pil_rgba.png")).image
        XCTAssertEqual(image, PixelImage(width: 6, height: 4, channels: 4, pixels: expected(6, 4, 4)))
    }

    func testGreyAlphaBecomesRGBA() throws {
        let image = try PNGDecoder.decode(fixture("pil_la.png")).image
        let la = expected(5, 3, 2)
        var rgba: [UInt8] = []
        for p in 0..<15 {
            let grey: UInt8 = la[2 * p]
            rgba += [grey, grey, grey, la[2 * p + 1]]
        }
        XCTAssertEqual(image, PixelImage(width: 5, height: 3, channels: 4, pixels: rgba))
    }

    /// Palette entry i = RGB pixelValue(i, 0, c), index (x + 3y) % entries; tRNS alpha 255 - 6i.
    private func paletteImage(_ width: Int, _ height: Int, entries: Int, alpha: Bool) -> PixelImage {
        var pixels: [UInt8] = []
        for y in 0..<height {
            for x in 0..<width {
                let i = (x + 3 * y) % entries
                pixels += (0..<3).map { pixelValue(i, 0, $0) }
                if alpha { pixels.append(UInt8(255 - 6 * i)) }
            }
        }
        return PixelImage(width: width, height: height, channels: alpha ? 4 : 3, pixels: pixels)
    }

    func testEightBitPaletteWithTransparency() throws {
        let decoded = try PNGDecoder.decode(fixture("pil_palette.png"))
        XCTAssertEqual(decoded.chunkTypes, ["IHDR", "PLTE", "tRNS", "IDAT", "IEND"])
        XCTAssertEqual(decoded.image, paletteImage(7, 5, entries: 40, alpha: true))
    }

    func testFourBitPalette() throws {
        XCTAssertEqual(try PNGDecoder.decode(fixture("pil_palette4.png")).image, paletteImage(9, 3, entries: 16, alpha: false))
    }

    func testInterlacedAndSixteenBitAreRefusedClearly() throws {
        XCTAssertThrowsError(try PNGDecoder.decode(fixture("interlaced.png"))) {
            XCTAssertTrue("\($0)".contains("interlaced"), "\($0)")
        }
        XCTAssertThrowsError(try PNGDecoder.decode(fixture("pil_16bit.png"))) {
            XCTAssertTrue("\($0)".contains("16-bit"), "\($0)")
        }
    }

    func testDamagedFilesAreRefused() throws {
        let good = try fixture("pil_rgb.png")
        var flipped = good
        flipped[40] ^= 0x01  // inside IHDR/tEXt data: the CRC no longer matches
        XCTAssertThrowsError(try PNGDecoder.decode(flipped)) { XCTAssertTrue("\($0)".contains("CRC"), "\($0)") }
        XCTAssertThrowsError(try PNGDecoder.decode(Array(good.prefix(good.count - 12)))) {
            XCTAssertTrue("\($0)".contains("IEND") || "\($0)".contains("truncated"), "\($0)")
        }
        XCTAssertThrowsError(try PNGDecoder.decode(Array("GIF89a".utf8))) { XCTAssertTrue("\($0)".contains("signature"), "\($0)") }
        XCTAssertThrowsError(try PNGDecoder.read(path: "/no/such/file.png")) { XCTAssertTrue("\($0)".contains("/no/such/file.png"), "\($0)") }
    }

    /// Every filter type through the encoder's per-row choice, on a larger image than the PIL fixtures.
    func testEncoderRoundTripLargeNoisyImage() throws {
        var state: UInt32 = 99
        let pixels = (0..<(61 * 47 * 3)).map { i -> UInt8 in
            state = state &* 1_664_525 &+ 1_013_904_223
            return i % 5 == 0 ? UInt8(state >> 24) : UInt8((i / 3) % 251)
        }
        let image = PixelImage(width: 61, height: 47, channels: 3, pixels: pixels)
        XCTAssertEqual(try PNGDecoder.decode(PNGEncoder.encode(image)).image, image)
    }

    /// A PNG whose image data inflates to more bytes than its IHDR allows (a decompression bomb in small): refused,
    /// and the inflation stops at the image's size. The zlib stream uses stored blocks (RFC 1950/1951), written here.
    func testImageDataLongerThanTheImageIsRefused() throws {
        let width = 4, height = 4, expectedBytes = height * (width * 3 + 1)
        let raw = [UInt8](repeating: 0, count: expectedBytes + 5000)  // filter 0 rows, then far too much
        var zlib: [UInt8] = [0x78, 0x01]
        var offset = 0
        while offset < raw.count {
            let n = min(65_535, raw.count - offset)
            zlib.append(offset + n == raw.count ? 1 : 0)
            zlib += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            zlib += raw[offset..<(offset + n)]
            offset += n
        }
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in raw { a = (a + UInt32(byte)) % 65_521; b = (b + a) % 65_521 }
        zlib += withUnsafeBytes(of: (b << 16 | a).bigEndian) { Array($0) }
        func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
            let body = Array(type.utf8) + data
            return withUnsafeBytes(of: UInt32(data.count).bigEndian) { Array($0) } + body
                + withUnsafeBytes(of: CRC32.checksum(body).bigEndian) { Array($0) }
        }
        let ihdr: [UInt8] = [0, 0, 0, UInt8(width), 0, 0, 0, UInt8(height), 8, 2, 0, 0, 0]
        let file = PNGEncoder.signature + chunk("IHDR", ihdr) + chunk("IDAT", zlib) + chunk("IEND", [])
        XCTAssertThrowsError(try PNGDecoder.decode(file)) { XCTAssertTrue("\($0)".contains("does not inflate"), "\($0)") }
    }
}

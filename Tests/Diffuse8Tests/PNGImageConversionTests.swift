import XCTest
@testable import Diffuse8

/// VAE output → 8-bit pixels, against diffusers' `VaeImageProcessor.postprocess(output_type="pil")`
/// (`Tests/Fixtures/formats/image_postprocess.safetensors`, with rounding ties and clamp edges).
final class PNGImageConversionTests: XCTestCase {
    func testMatchesDiffusersPostprocess() throws {
        let file = try SafetensorsFile(path: Fixtures.path("formats/image_postprocess.safetensors"))
        let input = try file.tensor(named: "input")
        let expected = try file.tensor(named: "rgb")  // N, H, W, 3 as uint8 values
        let images = ImageConversion.pixelImages(fromDecoded: input)
        XCTAssertEqual(images.count, 2)
        XCTAssertEqual([images[0].width, images[0].height, images[0].channels], [5, 4, 3])
        let got = images.flatMap(\.pixels)
        XCTAssertEqual(got, expected.scalars.map { UInt8($0) })
    }

    func testSpecialValues() {
        XCTAssertEqual(ImageConversion.byte(fromUnit: -5), 0)
        XCTAssertEqual(ImageConversion.byte(fromUnit: 5), 255)
        XCTAssertEqual(ImageConversion.byte(fromUnit: .nan), 0)
        XCTAssertEqual(ImageConversion.byte(fromUnit: 0), 128)  // 127.5 rounds half to even
        let grey = ImageConversion.pixelImages(fromDecoded: Tensor(shape: [1, 1, 1, 2], scalars: [-1, 1]))
        XCTAssertEqual(grey[0].channels, 1)
        XCTAssertEqual(grey[0].pixels, [0, 255])
    }
}

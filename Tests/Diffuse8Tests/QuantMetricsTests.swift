import XCTest
@testable import Diffuse8

/// PSNR and SSIM against scikit-image (`tools/reference/quantization.py`), plus hand cases.
final class QuantMetricsTests: XCTestCase {
    private func image(_ t: Tensor) -> PixelImage {
        PixelImage(width: t.shape[1], height: t.shape[0], channels: 3, pixels: t.scalars.map { UInt8($0) })
    }

    func testMatchesScikitImage() throws {
        let ref = try Fixtures.reference("quant_metrics")
        let a = image(try ref.tensor(named: "a")), b = image(try ref.tensor(named: "b"))
        XCTAssertEqual(ImageMetrics.psnr(a, b), Double(try ref.tensor(named: "psnr_rgb").scalars[0]), accuracy: 1e-4)
        XCTAssertEqual(ImageMetrics.ssim(a, b), Double(try ref.tensor(named: "ssim_luma").scalars[0]), accuracy: 1e-5)
    }

    func testHandCases() {
        let a = PixelImage(width: 8, height: 8, channels: 3, pixels: (0..<192).map { UInt8($0) })
        XCTAssertEqual(ImageMetrics.psnr(a, a), .infinity)
        XCTAssertEqual(ImageMetrics.ssim(a, a), 1, accuracy: 1e-12)
        var b = a
        b.pixels[0] &+= 16  // one error of 16 over 192 values: MSE = 256/192
        XCTAssertEqual(ImageMetrics.psnr(a, b), 10 * log10(255 * 255 / (256.0 / 192)), accuracy: 1e-9)
        XCTAssertEqual(ImageMetrics.quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 0.1), 2)
        XCTAssertEqual(ImageMetrics.quantile([0, 10], 0.1), 1, accuracy: 1e-12)
        let t = Tensor(shape: [2], scalars: [3, 4])
        XCTAssertEqual(ImageMetrics.sqnr(reference: t, Tensor(shape: [2], scalars: [3, 3])), 10 * log10(25.0), accuracy: 1e-9)
    }
}

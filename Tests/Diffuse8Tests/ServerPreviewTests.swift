import Diffuse8
@testable import Diffuse8Server
import XCTest

/// The latents → RGB live preview (`current_image`).
final class ServerPreviewTests: XCTestCase {
    func testSD1FactorsByHand() throws {
        // One latent pixel (1, 0, 0, 0): RGB = first row of A1111's factors = (0.298, 0.207, 0.208);
        // bytes = round((v·0.5 + 0.5)·255) = round(165.495, 153.89, 154.02) = 165, 154, 154.
        let latents = Tensor(shape: [1, 4, 1, 1], scalars: [1, 0, 0, 0])
        let image = try XCTUnwrap(LatentPreview.image(latents: latents))
        XCTAssertEqual(image.pixels, [165, 154, 154])
        XCTAssertNil(LatentPreview.image(latents: Tensor(shape: [1, 3, 1, 1], scalars: [0, 0, 0])), "3 channels do not fit the map")
    }

    func testFitRecoversAKnownLinearMap() throws {
        // An image made from the latents by a chosen map (each latent pixel an 8×8 block) must give that map back.
        let map = LatentPreview.LinearMap(weights: [[0.5, -0.1, 0.2], [0.0, 0.3, -0.4], [-0.25, 0.1, 0.0], [0.05, 0.05, 0.6]],
                                          bias: [0.1, -0.2, 0.05])
        let (h, w, f) = (4, 5, 8)
        var generator = TorchGenerator(seed: 3)
        let latents = generator.randn([1, 4, h, w])
        var pixels = [Float](repeating: 0, count: 3 * h * f * w * f)
        for c in 0..<3 {
            for y in 0..<(h * f) {
                for x in 0..<(w * f) {
                    var v = map.bias[c]
                    for l in 0..<4 { v += latents.scalars[l * h * w + (y / f) * w + x / f] * map.weights[l][c] }
                    pixels[c * h * f * w * f + y * w * f + x] = v
                }
            }
        }
        let fitted = try XCTUnwrap(LatentPreview.fit(latents: latents, image: Tensor(shape: [1, 3, h * f, w * f], scalars: pixels)))
        for l in 0..<4 {
            for c in 0..<3 { XCTAssertEqual(fitted.weights[l][c], map.weights[l][c], accuracy: 1e-3) }
        }
        for c in 0..<3 { XCTAssertEqual(fitted.bias[c], map.bias[c], accuracy: 1e-3) }
        XCTAssertNil(LatentPreview.fit(latents: latents, image: Tensor(shape: [1, 3, 7, 7], scalars: [Float](repeating: 0, count: 147))))
    }
}

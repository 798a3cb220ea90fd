extension ImageConversion {
    /// An init image for image-to-image as diffusers' `VaeImageProcessor.preprocess` makes it: RGB (grey repeated,
    /// alpha dropped, as PIL's `convert("RGB")`), `x / 255` then `2x − 1` in float32, NCHW [1, 3, H, W].
    public static func initImageTensor(_ image: PixelImage) -> Tensor {
        let (w, h, c) = (image.width, image.height, image.channels)
        let plane = w * h
        return Tensor(shape: [1, 3, h, w]) { out in
            for i in 0..<plane {
                for channel in 0..<3 {
                    let source = c >= 3 ? channel : 0
                    let unit = Float(image.pixels[i * c + source]) / 255
                    out[channel * plane + i] = 2 * unit - 1
                }
            }
        }
    }

    /// `image` resampled to `width`×`height` with a triangle (bilinear) filter widened when shrinking, like PIL's
    /// `resize(..., BILINEAR)` — what A1111's "Just resize" does to an init image of another size (it uses Lanczos;
    /// the difference is below what the VAE encoder keeps).
    public static func resized(_ image: PixelImage, width: Int, height: Int) -> PixelImage {
        guard image.width != width || image.height != height else { return image }
        let c = image.channels
        func weights(from source: Int, to target: Int) -> [[(Int, Float)]] {
            let scale = Double(source) / Double(target)
            let support = max(1, scale)
            return (0..<target).map { t in
                let center = (Double(t) + 0.5) * scale
                let low = max(0, Int((center - support).rounded(.down))), high = min(source - 1, Int((center + support).rounded(.up)))
                var row: [(Int, Float)] = []
                var total = 0.0
                for s in low...max(low, high) {
                    let w = max(0, 1 - abs((Double(s) + 0.5 - center) / support))
                    if w > 0 { row.append((s, Float(w))); total += w }
                }
                return total > 0 ? row.map { ($0.0, $0.1 / Float(total)) } : [(min(source - 1, Int(center)), 1)]
            }
        }
        let horizontal = weights(from: image.width, to: width), vertical = weights(from: image.height, to: height)
        var rows = [Float](repeating: 0, count: image.height * width * c)
        for y in 0..<image.height {
            for x in 0..<width {
                for (s, w) in horizontal[x] {
                    for k in 0..<c { rows[(y * width + x) * c + k] += w * Float(image.pixels[(y * image.width + s) * c + k]) }
                }
            }
        }
        var pixels = [UInt8](repeating: 0, count: height * width * c)
        for y in 0..<height {
            for x in 0..<width {
                for k in 0..<c {
                    var v: Float = 0
                    for (s, w) in vertical[y] { v += w * rows[(s * width + x) * c + k] }
                    pixels[(y * width + x) * c + k] = UInt8(min(255, max(0, v.rounded())))
                }
            }
        }
        return PixelImage(width: width, height: height, channels: c, pixels: pixels)
    }
}

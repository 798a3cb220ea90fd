#if canImport(Glibc)
import Glibc
#endif

/// Paired image-quality metrics of a quantized image against the full-precision image of the same
/// prompt and seed.
///
/// - PSNR: over all RGB channels of the 8-bit images, 10·log10(255² / MSE) (skimage
///   `peak_signal_noise_ratio(data_range=255)`); identical images give +∞ (`psnrCap` caps it for means).
/// - SSIM: on luma Y = 0.299 R + 0.587 G + 0.114 B (unrounded, range 255), skimage
///   `structural_similarity` defaults: 7×7 uniform window, sample covariance (N/(N−1)), K1 0.01,
///   K2 0.03, mean over the map with the (7−1)/2 = 3-pixel border cropped. Images smaller than 7×7 are rejected.
public enum ImageMetrics {
    /// The value a +∞ PSNR (identical images) counts as in averages.
    public static let psnrCap = 100.0

    public static func psnr(_ a: PixelImage, _ b: PixelImage) -> Double {
        precondition(a.pixels.count == b.pixels.count && a.channels == b.channels, "PSNR needs images of the same size")
        var sum = 0.0
        for i in a.pixels.indices {
            let d = Double(a.pixels[i]) - Double(b.pixels[i])
            sum += d * d
        }
        let mse = sum / Double(a.pixels.count)
        return mse == 0 ? .infinity : 10 * log10(255 * 255 / mse)
    }

    /// Luma plane of an RGB(A) or grey image, as Double values in [0, 255].
    public static func luma(_ image: PixelImage) -> [Double] {
        let n = image.width * image.height
        if image.channels == 1 { return image.pixels.map(Double.init) }
        return (0..<n).map { i in
            let p = i * image.channels
            return 0.299 * Double(image.pixels[p]) + 0.587 * Double(image.pixels[p + 1]) + 0.114 * Double(image.pixels[p + 2])
        }
    }

    public static func ssim(_ a: PixelImage, _ b: PixelImage) -> Double {
        precondition(a.width == b.width && a.height == b.height, "SSIM needs images of the same size")
        return ssim(luma(a), luma(b), width: a.width, height: a.height)
    }

    /// SSIM of two planes (see the type's doc comment), data range 255.
    public static func ssim(_ x: [Double], _ y: [Double], width: Int, height: Int, window: Int = 7) -> Double {
        precondition(width >= window && height >= window, "SSIM needs images of at least \(window)×\(window) pixels")
        let c1 = (0.01 * 255) * (0.01 * 255), c2 = (0.03 * 255) * (0.03 * 255)
        let np = Double(window * window), covarianceNorm = np / (np - 1)
        let pad = (window - 1) / 2
        var total = 0.0, count = 0
        for cy in pad..<(height - pad) {
            for cx in pad..<(width - pad) {
                var sx = 0.0, sy = 0.0, sxx = 0.0, syy = 0.0, sxy = 0.0
                for dy in -pad...pad {
                    let row = (cy + dy) * width
                    for dx in -pad...pad {
                        let u = x[row + cx + dx], v = y[row + cx + dx]
                        sx += u; sy += v; sxx += u * u; syy += v * v; sxy += u * v
                    }
                }
                let ux = sx / np, uy = sy / np
                let vx = covarianceNorm * (sxx / np - ux * ux)
                let vy = covarianceNorm * (syy / np - uy * uy)
                let vxy = covarianceNorm * (sxy / np - ux * uy)
                total += ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
                count += 1
            }
        }
        return total / Double(count)
    }

    /// Signal-to-quantization-noise ratio in dB: 10·log10(‖ref‖² / ‖ref − x‖²) (+∞ when equal).
    public static func sqnr(reference: Tensor, _ x: Tensor) -> Double {
        var signal = 0.0, noise = 0.0
        for i in reference.scalars.indices {
            let r = Double(reference.scalars[i]), d = r - Double(x.scalars[i])
            signal += r * r
            noise += d * d
        }
        return noise == 0 ? .infinity : 10 * log10(signal / noise)
    }

    /// The q-quantile (0…1) of `values` by linear interpolation (numpy's default), e.g. 0.1 for the
    /// 10th-percentile-worst PSNR.
    public static func quantile(_ values: [Double], _ q: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let position = q * Double(sorted.count - 1)
        let low = Int(position.rounded(.down)), high = min(low + 1, sorted.count - 1)
        return sorted[low] + (sorted[high] - sorted[low]) * (position - Double(low))
    }
}

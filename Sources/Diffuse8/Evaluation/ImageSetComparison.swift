/// Scores sets of already generated images against full-precision reference images of the same prompts and
/// seeds, with the metrics and summary `diffuse8 eval` uses for the models it runs itself (PSNR, SSIM, prompt
/// fidelity; `QuantizationEvaluator.summarize`). This is how images made by another tool (for example a PyTorch
/// quantization toolkit) are compared on equal terms: each set against its own tool's FP images.
///
/// Images are found by name: prompt index i (0-based, in the prompt list) and seed s give `<i:03d>-s<s>.png`.
public enum ImageSetComparison {
    /// The file name of prompt `index`, seed `seed`.
    public static func fileName(promptIndex index: Int, seed: UInt64) -> String {
        let digits = String(index)
        return String(repeating: "0", count: max(0, 3 - digits.count)) + digits + "-s\(seed).png"
    }

    /// One sample per prompt and seed: the reference image first, then one image per set.
    ///
    /// - Parameters:
    ///   - prompts: the prompt list, in the order the images were numbered.
    ///   - seeds: seeds per prompt (`firstSeed`, `firstSeed + 1`, …).
    ///   - sets: how many image sets there are (besides the reference).
    ///   - load: returns the image of set `k` (nil = the reference) for a file name; it throws a clear error
    ///     (naming the file) when the image is missing or unreadable.
    /// - Throws: `QuantizationError` when an image's size differs from its reference's.
    public static func samples(prompts: [String], seeds: Int, firstSeed: UInt64, sets: Int,
                               load: (_ set: Int?, _ fileName: String) throws -> PixelImage) throws -> [QuantizationEvaluator.Sample] {
        var samples: [QuantizationEvaluator.Sample] = []
        for (i, prompt) in prompts.enumerated() {
            for s in 0..<seeds {
                let seed = firstSeed + UInt64(s)
                let name = fileName(promptIndex: i, seed: seed)
                let reference = rgb(try load(nil, name))
                guard reference.width >= 7, reference.height >= 7 else {  // SSIM's 7×7 window
                    throw QuantizationError("\(name) is \(reference.width)×\(reference.height); comparing images needs at least 7×7 pixels")
                }
                var images = [reference], psnr: [Double] = [], ssim: [Double] = []
                for k in 0..<sets {
                    let image = rgb(try load(k, name))
                    guard image.width == reference.width, image.height == reference.height else {
                        throw QuantizationError("\(name) of image set \(k + 1) is \(image.width)×\(image.height) but its reference is \(reference.width)×\(reference.height); the sets must come from the same prompts, seeds and image size")
                    }
                    images.append(image)
                    psnr.append(ImageMetrics.psnr(reference, image))
                    ssim.append(ImageMetrics.ssim(reference, image))
                }
                samples.append(QuantizationEvaluator.Sample(
                    prompt: prompt, seed: seed, psnr: psnr, ssim: ssim,
                    stepSQNR: Array(repeating: [], count: sets), images: images,
                    fidelity: images.map { QuantizationEvaluator.fidelity(of: $0, prompt: prompt) }))
            }
        }
        return samples
    }

    /// The image as 3-channel RGB (grey is repeated, alpha dropped), so that images saved by other tools in
    /// other layouts are compared on the same pixels.
    static func rgb(_ image: PixelImage) -> PixelImage {
        if image.channels == 3 { return image }
        return PixelImage(width: image.width, height: image.height, channels: 3, pixels: QuantizationEvaluator.rgb(image))
    }
}

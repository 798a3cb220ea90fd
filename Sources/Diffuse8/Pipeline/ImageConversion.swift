/// An 8-bit image with interleaved channels, rows top to bottom (HWC, like a PIL image's bytes).
public struct PixelImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    /// 1 (grey), 3 (RGB) or 4 (RGBA).
    public let channels: Int
    /// `height * width * channels` bytes.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(width > 0 && height > 0 && [1, 3, 4].contains(channels), "image \(width)x\(height)x\(channels) is not supported")
        precondition(pixels.count == width * height * channels,
                     "a \(width)x\(height) image with \(channels) channels needs \(width * height * channels) bytes, got \(pixels.count)")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }
}

/// Conversions between decoded image tensors and 8-bit pixels.
public enum ImageConversion {
    /// The images of a VAE decoder output (NCHW, values nominally in [-1, 1], C = 3 or 1), one per batch
    /// element, converted exactly as diffusers' `VaeImageProcessor.postprocess(output_type="pil")` does:
    /// `(x * 0.5 + 0.5).clamp(0, 1)` in float32, then `(v * 255).round()` (numpy: half to even) as uint8.
    /// NaN becomes 0 (numpy's cast of NaN is undefined; torch's clamp keeps NaN).
    public static func pixelImages(fromDecoded tensor: Tensor) -> [PixelImage] {
        precondition(tensor.rank == 4, "expected an NCHW image tensor, got shape \(tensor.shape)")
        let (batch, channels, height, width) = (tensor.shape[0], tensor.shape[1], tensor.shape[2], tensor.shape[3])
        precondition(channels == 3 || channels == 1, "expected 3 (RGB) or 1 (grey) channels, got shape \(tensor.shape)")
        let plane = height * width
        return (0..<batch).map { n in
            var pixels = [UInt8](repeating: 0, count: plane * channels)
            tensor.scalars.withUnsafeBufferPointer { source in
                let image = n * channels * plane
                for c in 0..<channels {
                    for i in 0..<plane {
                        pixels[i * channels + c] = byte(fromUnit: source[image + c * plane + i])
                    }
                }
            }
            return PixelImage(width: width, height: height, channels: channels, pixels: pixels)
        }
    }

    /// One value of [-1, 1] to a byte, as `VaeImageProcessor` does (see `pixelImages(fromDecoded:)`).
    @inline(__always)
    public static func byte(fromUnit x: Float) -> UInt8 {
        let v = min(max(x * 0.5 + 0.5, 0), 1)  // max/min with NaN first argument keep the bound: NaN → 0 below
        guard !v.isNaN else { return 0 }
        return UInt8((v * 255).rounded(.toNearestOrEven))
    }
}

import Diffuse8

/// A cheap preview of latents as an RGB image, one pixel per latent (1/8 of the output size for SD models): a
/// linear map from the latent channels to RGB, as AUTOMATIC1111's "Approx cheap" live preview. It suggests colours
/// and layout only. The map starts as A1111's SD1.x factors and is refitted to the loaded model after each image it
/// makes (least squares from the final latents to the decoded images made so far), so models with their own VAE
/// preview in roughly the right colours once they have made a few images.
public enum LatentPreview {
    /// RGB = weights[channel] · latent + bias.
    public struct LinearMap: Sendable, Equatable {
        /// One row per latent channel: its R, G, B contributions.
        public var weights: [[Float]]
        public var bias: [Float]
    }

    /// A1111's "Approx cheap" factors for SD1.x latents (`sd_samplers_common.samples_to_images_tensor`).
    public static let sd1ApproxCheap = LinearMap(
        weights: [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]],
        bias: [0, 0, 0])

    /// The first image of `latents` ([N, C, h, w]) as RGB through `map`, or nil when C does not match the map.
    public static func image(latents: Tensor, map: LinearMap = sd1ApproxCheap) -> PixelImage? {
        guard latents.rank == 4, latents.shape[1] == map.weights.count else { return nil }
        let (channels, height, width) = (latents.shape[1], latents.shape[2], latents.shape[3])
        let plane = height * width
        var pixels = [UInt8](repeating: 0, count: plane * 3)
        latents.scalars.withUnsafeBufferPointer { x in
            for i in 0..<plane {
                for c in 0..<3 {
                    var v = map.bias[c]
                    for l in 0..<channels { v += x[l * plane + i] * map.weights[l][c] }
                    pixels[i * 3 + c] = ImageConversion.byte(fromUnit: v)
                }
            }
        }
        return PixelImage(width: width, height: height, channels: 3, pixels: pixels)
    }

    /// The least-squares linear map (with bias) from `latents` ([1, C, h, w]) to `image` ([1, 3, H, W] in [-1, 1],
    /// H and W multiples of h and w). Nil when the shapes do not fit or the system is singular.
    public static func fit(latents: Tensor, image: Tensor) -> LinearMap? {
        var fit = Fit(channels: latents.rank == 4 ? latents.shape[1] : 0)
        guard fit.add(latents: latents, image: image) else { return nil }
        return fit.solve()
    }

    /// Least squares over every image added so far: the normal equations AᵀA·B = AᵀY, rows a = (latent channels…,
    /// 1) and y = the mean RGB of the latent pixel's block of the decoded image. Several images (different colours)
    /// determine the map better than one.
    public struct Fit: Sendable {
        public let channels: Int
        private var ata: [Double], aty: [Double], rows = 0

        public init(channels: Int) {
            self.channels = channels
            ata = [Double](repeating: 0, count: (channels + 1) * (channels + 1))
            aty = [Double](repeating: 0, count: (channels + 1) * 3)
        }

        /// Adds one image's latent pixels; false (nothing added) when the shapes do not fit.
        public mutating func add(latents: Tensor, image: Tensor) -> Bool {
            guard latents.rank == 4, image.rank == 4, image.shape[1] == 3, latents.shape[1] == channels else { return false }
            let (h, w) = (latents.shape[2], latents.shape[3])
            guard h > 0, w > 0, image.shape[2] % h == 0, image.shape[3] % w == 0 else { return false }
            let (fy, fx, n) = (image.shape[2] / h, image.shape[3] / w, channels + 1)
            let (plane, imageWidth, imagePlane) = (h * w, image.shape[3], image.shape[2] * image.shape[3])
            latents.scalars.withUnsafeBufferPointer { x in
                image.scalars.withUnsafeBufferPointer { p in
                    for i in 0..<h {
                        for j in 0..<w {
                            var a = (0..<channels).map { Double(x[$0 * plane + i * w + j]) }
                            a.append(1)
                            for c in 0..<3 {
                                var sum = 0.0
                                for dy in 0..<fy {
                                    for dx in 0..<fx { sum += Double(p[c * imagePlane + (i * fy + dy) * imageWidth + j * fx + dx]) }
                                }
                                let y = sum / Double(fy * fx)
                                for r in 0..<n { aty[r * 3 + c] += a[r] * y }
                            }
                            for r in 0..<n { for s in 0..<n { ata[r * n + s] += a[r] * a[s] } }
                        }
                    }
                }
            }
            rows += plane
            return true
        }

        /// The fitted map; nil before any image or when singular. A small ridge keeps the system solvable when a
        /// channel is constant.
        public func solve() -> LinearMap? {
            guard rows > 0 else { return nil }
            let n = channels + 1
            var m = ata
            for r in 0..<n { m[r * n + r] += 1e-6 * Double(rows) }
            guard let solution = LatentPreview.solve(m, aty, n: n, columns: 3) else { return nil }
            return LinearMap(weights: (0..<channels).map { r in (0..<3).map { Float(solution[r * 3 + $0]) } },
                             bias: (0..<3).map { Float(solution[channels * 3 + $0]) })
        }
    }

    /// Solves M·X = B (M n×n, B n×columns) by Gaussian elimination with partial pivoting.
    static func solve(_ m: [Double], _ b: [Double], n: Int, columns: Int) -> [Double]? {
        var (m, b) = (m, b)
        for k in 0..<n {
            let pivot = (k..<n).max { abs(m[$0 * n + k]) < abs(m[$1 * n + k]) }!
            guard abs(m[pivot * n + k]) > 1e-12 else { return nil }
            if pivot != k {
                for s in 0..<n { m.swapAt(k * n + s, pivot * n + s) }
                for c in 0..<columns { b.swapAt(k * columns + c, pivot * columns + c) }
            }
            for r in (k + 1)..<n {
                let factor = m[r * n + k] / m[k * n + k]
                for s in k..<n { m[r * n + s] -= factor * m[k * n + s] }
                for c in 0..<columns { b[r * columns + c] -= factor * b[k * columns + c] }
            }
        }
        var x = [Double](repeating: 0, count: n * columns)
        for k in stride(from: n - 1, through: 0, by: -1) {
            for c in 0..<columns {
                var v = b[k * columns + c]
                for s in (k + 1)..<n { v -= m[k * n + s] * x[s * columns + c] }
                x[k * columns + c] = v / m[k * n + k]
            }
        }
        return x
    }
}

import CompressNIO
import Diffuse8
import NIOCore

/// An image could not be encoded. The description says what is wrong.
public struct PNGError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Encodes 8-bit grey, RGB or RGBA images as PNG (ISO/IEC 15948), non-interlaced, with text chunks.
///
/// Chunks: IHDR, the text chunks in the order given, one IDAT, IEND. Scanlines are filtered with the
/// per-row filter chosen by the minimum-sum-of-absolute-differences heuristic the PNG spec suggests,
/// then zlib-compressed by CompressNIO (system zlib). Text goes in `tEXt` when keyword and value are
/// Latin-1, else in an uncompressed `iTXt` (UTF-8) — the rule PIL's `PngInfo.add_text` follows, so a
/// unicode prompt survives while A1111-style readers still find `parameters` in `tEXt` when they can.
public enum PNGEncoder {
    /// The 8-byte PNG signature.
    public static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// The PNG file for `image` with `text` chunks (keyword, value) in order.
    public static func encode(_ image: PixelImage, text: [(keyword: String, value: String)] = []) throws -> [UInt8] {
        let colorType: UInt8
        switch image.channels {
        case 1: colorType = 0
        case 3: colorType = 2
        case 4: colorType = 6
        default: throw PNGError("PNG: \(image.channels) channels are not supported (1, 3 or 4)")
        }
        guard image.width <= Int(Int32.max), image.height <= Int(Int32.max) else {
            throw PNGError("PNG: \(image.width)x\(image.height) is larger than PNG allows")
        }
        var header: [UInt8] = []
        header += bigEndian(UInt32(image.width))
        header += bigEndian(UInt32(image.height))
        header += [8, colorType, 0, 0, 0]  // bit depth, colour type, deflate, adaptive filtering, no interlace

        var file = signature
        appendChunk("IHDR", header, to: &file)
        for (keyword, value) in text {
            let (type, data) = try textChunk(keyword: keyword, value: value)
            appendChunk(type, data, to: &file)
        }
        appendChunk("IDAT", try compress(filteredScanlines(image)), to: &file)
        appendChunk("IEND", [], to: &file)
        return file
    }

    /// Encodes `image` and writes it to `path` atomically (a failed write leaves no partial file).
    public static func write(_ image: PixelImage, text: [(keyword: String, value: String)] = [], to path: String) throws {
        try AtomicFileWriter.write(try encode(image, text: text), to: path)
    }

    /// Encodes raw interleaved pixels (`channels` = 1 grey, 3 RGB, 4 RGBA).
    public static func encode(pixels: [UInt8], width: Int, height: Int, channels: Int = 3,
                              text: [(keyword: String, value: String)] = []) throws -> [UInt8] {
        guard width > 0, height > 0, [1, 3, 4].contains(channels), pixels.count == width * height * channels else {
            throw PNGError("PNG: \(pixels.count) bytes do not make a \(width)x\(height) image with \(channels) channels")
        }
        return try encode(PixelImage(width: width, height: height, channels: channels, pixels: pixels), text: text)
    }

    // MARK: - Chunks

    /// `tEXt` (Latin-1) or `iTXt` (UTF-8) for one keyword/value pair.
    static func textChunk(keyword: String, value: String) throws -> (String, [UInt8]) {
        guard let keywordBytes = latin1(keyword), (1...79).contains(keywordBytes.count),
              !keywordBytes.contains(0), keywordBytes.first != 0x20, keywordBytes.last != 0x20 else {
            throw PNGError("PNG: text keyword '\(keyword)' must be 1-79 Latin-1 characters without NUL or leading/trailing spaces")
        }
        guard !value.unicodeScalars.contains("\0") else {
            throw PNGError("PNG: text for keyword '\(keyword)' contains a NUL character, which PNG text cannot hold")
        }
        if let valueBytes = latin1(value) {
            return ("tEXt", keywordBytes + [0] + valueBytes)
        }
        // keyword, NUL, compression flag 0, method 0, empty language tag NUL, empty translated keyword NUL, UTF-8 text
        return ("iTXt", keywordBytes + [0, 0, 0, 0, 0] + Array(value.utf8))
    }

    private static func latin1(_ text: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        for scalar in text.unicodeScalars {
            guard scalar.value <= 0xFF else { return nil }
            bytes.append(UInt8(scalar.value))
        }
        return bytes
    }

    private static func appendChunk(_ type: String, _ data: [UInt8], to file: inout [UInt8]) {
        let typeBytes = Array(type.utf8)
        file += bigEndian(UInt32(data.count))
        file += typeBytes
        file += data
        file += bigEndian(CRC32.checksum(typeBytes + data))
    }

    private static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }

    // MARK: - Image data

    /// Each row prefixed by its filter type byte, filtered with the filter that minimises the sum of
    /// |filtered byte as signed|.
    static func filteredScanlines(_ image: PixelImage) -> [UInt8] {
        let bpp = image.channels
        let stride = image.width * bpp
        var out = [UInt8](repeating: 0, count: image.height * (stride + 1))
        var candidate = [UInt8](repeating: 0, count: stride)
        var best = [UInt8](repeating: 0, count: stride)
        let zeros = [UInt8](repeating: 0, count: stride)
        image.pixels.withUnsafeBufferPointer { pixels in
            for y in 0..<image.height {
                let row = UnsafeBufferPointer(rebasing: pixels[(y * stride)..<((y + 1) * stride)])
                let up = y > 0 ? Array(pixels[((y - 1) * stride)..<(y * stride)]) : zeros
                var bestFilter: UInt8 = 0
                var bestScore = Int.max
                for filter: UInt8 in 0...4 {
                    var score = 0
                    for i in 0..<stride {
                        let a = i >= bpp ? row[i - bpp] : 0
                        let b = up[i]
                        let c = i >= bpp ? up[i - bpp] : 0
                        let predictor: UInt8
                        switch filter {
                        case 0: predictor = 0
                        case 1: predictor = a
                        case 2: predictor = b
                        case 3: predictor = UInt8((Int(a) + Int(b)) / 2)
                        default: predictor = paeth(a, b, c)
                        }
                        let value = row[i] &- predictor
                        candidate[i] = value
                        score += value < 128 ? Int(value) : 256 - Int(value)
                    }
                    if score < bestScore {
                        bestScore = score
                        bestFilter = filter
                        swap(&best, &candidate)
                    }
                }
                out[y * (stride + 1)] = bestFilter
                for i in 0..<stride { out[y * (stride + 1) + 1 + i] = best[i] }
            }
        }
        return out
    }

    /// The Paeth predictor (PNG spec, section 9.4).
    @inline(__always)
    static func paeth(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> UInt8 {
        let p = Int(a) + Int(b) - Int(c)
        let pa = abs(p - Int(a)), pb = abs(p - Int(b)), pc = abs(p - Int(c))
        if pa <= pb && pa <= pc { return a }
        return pb <= pc ? b : c
    }

    private static func compress(_ bytes: [UInt8]) throws -> [UInt8] {
        var input = ByteBuffer(bytes: bytes)
        do {
            var output = try input.compress(with: .zlib())
            return output.readBytes(length: output.readableBytes) ?? []
        } catch {
            throw PNGError("PNG: zlib compression failed (\(error))")
        }
    }
}

/// CRC-32 (ISO 3309 / ITU-T V.42, polynomial 0xEDB88320, reflected) as PNG chunks use it.
public enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}

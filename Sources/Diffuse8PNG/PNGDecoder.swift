#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CompressNIO
import Diffuse8
import NIOCore

/// A decoded PNG file: the pixels and the text chunks.
public struct DecodedPNG: Sendable {
    /// Grey (1 channel), RGB (3) or RGBA (4). Grey+alpha is widened to RGBA; palette images become RGB, or
    /// RGBA when they have a `tRNS` chunk.
    public var image: PixelImage
    /// `tEXt` (Latin-1) and uncompressed `iTXt` (UTF-8) chunks by keyword; later chunks win.
    public var text: [String: String]
    /// Chunk types in file order (e.g. `["IHDR", "tEXt", "IDAT", "IEND"]`).
    public var chunkTypes: [String]
}

/// Decodes PNG files (ISO/IEC 15948) of the kinds image tools and `PNGEncoder` write.
///
/// Supported: 8-bit grey, grey+alpha, RGB and RGBA; palette images of 1, 2, 4 or 8 bits (with `tRNS`);
/// all five scanline filters; several IDAT chunks. Every chunk's CRC is checked; IDAT is inflated with
/// CompressNIO (system zlib). Ancillary chunks other than text are skipped (no gamma or colour-profile
/// correction: the bytes are returned as stored).
/// Limitations, each a `PNGError` saying so: interlaced (Adam7) images, 16-bit samples, grey below 8 bits,
/// compressed `zTXt`/`iTXt` text is skipped rather than inflated.
public enum PNGDecoder {
    /// Reads and decodes the PNG at `path`.
    public static func read(path: String) throws -> DecodedPNG {
        var reason = ""
        guard let data = InputFile.contents(atPath: path, limit: 1 << 30, reason: &reason) else {
            throw PNGError("cannot read \(path): \(reason)")
        }
        do {
            return try decode(Array(data))
        } catch let error as PNGError {
            throw PNGError("\(path): \(error.description)")
        }
    }

    /// Decodes the bytes of a PNG file.
    public static func decode(_ file: [UInt8]) throws -> DecodedPNG {
        guard file.starts(with: PNGEncoder.signature) else { throw PNGError("not a PNG file (no PNG signature)") }
        func u32(_ at: Int) -> Int { file[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }

        var header: Header?
        var palette: [UInt8] = []      // RGB triples
        var transparency: [UInt8] = []  // palette alphas
        var compressed: [UInt8] = []
        var text: [String: String] = [:]
        var chunkTypes: [String] = []
        var position = PNGEncoder.signature.count
        while position < file.count {
            guard position + 12 <= file.count else { throw PNGError("truncated file: chunk header cut off at byte \(position)") }
            let length = u32(position)
            guard length <= Int(Int32.max), position + 12 + length <= file.count else {
                throw PNGError("truncated file: chunk at byte \(position) runs past the end")
            }
            let typeAndData = Array(file[(position + 4)..<(position + 8 + length)])
            let type = String(decoding: typeAndData.prefix(4), as: UTF8.self)
            guard UInt32(u32(position + 8 + length)) == CRC32.checksum(typeAndData) else {
                throw PNGError("bad CRC in \(type) chunk at byte \(position): the file is damaged")
            }
            let data = Array(typeAndData.dropFirst(4))
            chunkTypes.append(type)
            switch type {
            case "IHDR":
                guard chunkTypes.count == 1 else { throw PNGError("IHDR is not the first chunk") }
                header = try Header(data)
            case "PLTE":
                guard data.count % 3 == 0, !data.isEmpty, data.count <= 768 else { throw PNGError("PLTE of \(data.count) bytes is invalid") }
                palette = data
            case "tRNS":
                transparency = data
            case "tEXt":
                if let nul = data.firstIndex(of: 0) {
                    text[latin1(data[..<nul])] = latin1(data[(nul + 1)...])
                }
            case "iTXt":
                // keyword \0 compression-flag method language \0 translated \0 text
                if let nul = data.firstIndex(of: 0), nul + 2 < data.count, data[nul + 1] == 0 {
                    var rest = data[(nul + 3)...]
                    if let language = rest.firstIndex(of: 0) {
                        rest = rest[(language + 1)...]
                        if let translated = rest.firstIndex(of: 0) {
                            text[String(decoding: data[..<nul], as: UTF8.self)] = String(decoding: rest[(translated + 1)...], as: UTF8.self)
                        }
                    }
                }
            case "IDAT":
                compressed += data
            case "IEND":
                break
            default:
                // Unknown critical chunks (upper-case first letter) change how pixels are read: refuse them.
                if let first = typeAndData.first, first & 0x20 == 0 {
                    throw PNGError("unsupported critical chunk \(type)")
                }
            }
            position += 12 + length
            if type == "IEND" { break }
        }
        guard let header else { throw PNGError("no IHDR chunk") }
        guard chunkTypes.last == "IEND" else { throw PNGError("truncated file: no IEND chunk") }
        guard !compressed.isEmpty else { throw PNGError("no IDAT chunk (no image data)") }
        if header.colourType == 3 && palette.isEmpty { throw PNGError("palette image without a PLTE chunk") }

        var buffer = ByteBuffer(bytes: compressed)
        let raw: [UInt8]
        do {
            // Exactly this many bytes belong to the image: a stream that inflates to more (a "zip bomb") stops here.
            var inflated = try buffer.decompress(with: .zlib(), maxSize: header.height * (header.rowBytes + 1))
            raw = inflated.readBytes(length: inflated.readableBytes) ?? []
        } catch {
            throw PNGError("image data does not inflate (\(error)): the file is damaged")
        }
        let samples = try unfilter(raw, header)
        let image = try expand(samples, header, palette: palette, transparency: transparency)
        return DecodedPNG(image: image, text: text, chunkTypes: chunkTypes)
    }

    struct Header {
        let width: Int, height: Int, bitDepth: Int, colourType: Int
        /// Samples per pixel as stored.
        let storedChannels: Int

        init(_ data: [UInt8]) throws {
            guard data.count == 13 else { throw PNGError("IHDR of \(data.count) bytes (must be 13)") }
            width = data[0..<4].reduce(0) { $0 << 8 | Int($1) }
            height = data[4..<8].reduce(0) { $0 << 8 | Int($1) }
            bitDepth = Int(data[8])
            colourType = Int(data[9])
            guard width > 0, height > 0, width <= 1 << 24, height <= 1 << 24, width * height <= Self.maximumPixels else {
                throw PNGError("image size \(width)x\(height) is invalid or larger than \(Self.maximumPixels) pixels")
            }
            guard data[10] == 0, data[11] == 0 else { throw PNGError("unknown compression or filter method in IHDR") }
            guard data[12] == 0 else {
                throw PNGError("interlaced (Adam7) PNGs are not supported; re-save the image without interlacing")
            }
            switch colourType {
            case 0: storedChannels = 1
            case 2: storedChannels = 3
            case 3: storedChannels = 1
            case 4: storedChannels = 2
            case 6: storedChannels = 4
            default: throw PNGError("colour type \(colourType) is invalid")
            }
            if bitDepth == 16 {
                throw PNGError("16-bit PNGs are not supported; re-save the image with 8 bits per sample")
            }
            if colourType == 3 {
                guard [1, 2, 4, 8].contains(bitDepth) else { throw PNGError("palette bit depth \(bitDepth) is invalid") }
            } else if bitDepth != 8 {
                throw PNGError("\(bitDepth)-bit samples (colour type \(colourType)) are not supported; re-save with 8 bits per sample")
            }
        }

        /// Largest image decoded (8192 × 8192): bounds the memory a hostile header can ask for.
        static let maximumPixels = 1 << 26

        /// Bytes per row of samples, without the filter byte.
        var rowBytes: Int { (width * storedChannels * bitDepth + 7) / 8 }
        /// The filters' "bytes per complete pixel" (at least 1).
        var filterUnit: Int { max(1, storedChannels * bitDepth / 8) }
    }

    /// Undoes the per-row filters (None, Sub, Up, Average, Paeth); returns the rows without filter bytes.
    static func unfilter(_ raw: [UInt8], _ header: Header) throws -> [UInt8] {
        let stride = header.rowBytes, unit = header.filterUnit
        guard raw.count >= header.height * (stride + 1) else {
            throw PNGError("image data holds \(raw.count) bytes, \(header.height * (stride + 1)) expected: the file is damaged")
        }
        var rows = [UInt8](repeating: 0, count: header.height * stride)
        try raw.withUnsafeBufferPointer { source in
            try rows.withUnsafeMutableBufferPointer { out in
                for y in 0..<header.height {
                    let filter = source[y * (stride + 1)]
                    let input = y * (stride + 1) + 1, row = y * stride, previous = row - stride
                    for i in 0..<stride {
                        let a = i >= unit ? Int(out[row + i - unit]) : 0
                        let b = y > 0 ? Int(out[previous + i]) : 0
                        let predictor: Int
                        switch filter {
                        case 0: predictor = 0
                        case 1: predictor = a
                        case 2: predictor = b
                        case 3: predictor = (a + b) >> 1
                        case 4:
                            let c = (i >= unit && y > 0) ? Int(out[previous + i - unit]) : 0
                            let p = a + b - c
                            let (pa, pb, pc) = (abs(p - a), abs(p - b), abs(p - c))
                            predictor = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
                        default: throw PNGError("row \(y) has unknown filter type \(filter): the file is damaged")
                        }
                        out[row + i] = source[input + i] &+ UInt8(truncatingIfNeeded: predictor)
                    }
                }
            }
        }
        return rows
    }

    /// Stored samples to a `PixelImage` (grey, RGB or RGBA).
    static func expand(_ rows: [UInt8], _ header: Header, palette: [UInt8], transparency: [UInt8]) throws -> PixelImage {
        let (width, height) = (header.width, header.height)
        switch header.colourType {
        case 0, 2, 6:
            return PixelImage(width: width, height: height, channels: header.storedChannels, pixels: rows)
        case 4:
            var rgba = [UInt8](repeating: 0, count: width * height * 4)
            for p in 0..<(width * height) {
                let grey = rows[2 * p], alpha = rows[2 * p + 1]
                rgba[4 * p] = grey; rgba[4 * p + 1] = grey; rgba[4 * p + 2] = grey; rgba[4 * p + 3] = alpha
            }
            return PixelImage(width: width, height: height, channels: 4, pixels: rgba)
        default:
            let channels = transparency.isEmpty ? 3 : 4
            let entries = palette.count / 3
            let bits = header.bitDepth, perByte = 8 / bits, mask = (1 << bits) - 1
            var pixels = [UInt8](repeating: 0, count: width * height * channels)
            for y in 0..<height {
                for x in 0..<width {
                    let byte = Int(rows[y * header.rowBytes + x / perByte])
                    let index = (byte >> (8 - bits * (x % perByte + 1))) & mask
                    guard index < entries else {
                        throw PNGError("pixel (\(x), \(y)) uses palette entry \(index) of \(entries): the file is damaged")
                    }
                    let target = (y * width + x) * channels
                    pixels[target] = palette[3 * index]
                    pixels[target + 1] = palette[3 * index + 1]
                    pixels[target + 2] = palette[3 * index + 2]
                    if channels == 4 { pixels[target + 3] = index < transparency.count ? transparency[index] : 255 }
                }
            }
            return PixelImage(width: width, height: height, channels: channels, pixels: pixels)
        }
    }

    private static func latin1<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        String(String.UnicodeScalarView(bytes.map { Unicode.Scalar($0) }))
    }
}

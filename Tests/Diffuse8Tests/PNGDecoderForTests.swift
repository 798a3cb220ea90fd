import CompressNIO
import NIOCore

/// A minimal PNG reader used only by the tests to check the encoder: parses chunks, verifies every
/// CRC (bitwise CRC-32, written independently of the encoder's table version), inflates IDAT with
/// CompressNIO and undoes all five filters. 8-bit, non-interlaced grey/RGB/RGBA only.
/// It is itself checked on PNGs written by PIL (`pil_rgb.png`, `pil_grey.png`).
struct TestPNG {
    var width = 0, height = 0, channels = 0
    var pixels: [UInt8] = []
    var chunkTypes: [String] = []
    var text: [String: String] = [:]        // tEXt (Latin-1)
    var internationalText: [String: String] = [:]  // iTXt (UTF-8)

    struct Failure: Error, CustomStringConvertible { let description: String }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (0xEDB8_8320 & (0 &- (crc & 1))) }
        }
        return ~crc
    }

    init(_ file: [UInt8]) throws {
        guard file.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else { throw Failure(description: "no PNG signature") }
        func u32(_ at: Int) -> Int { file[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }
        var position = 8
        var compressed: [UInt8] = []
        while position < file.count {
            guard position + 12 <= file.count else { throw Failure(description: "chunk header cut off") }
            let length = u32(position)
            guard position + 12 + length <= file.count else { throw Failure(description: "chunk runs past the end") }
            let typeAndData = Array(file[(position + 4)..<(position + 8 + length)])
            let type = String(decoding: typeAndData.prefix(4), as: UTF8.self)
            let data = Array(typeAndData.dropFirst(4))
            guard UInt32(u32(position + 8 + length)) == Self.crc32(typeAndData) else { throw Failure(description: "bad CRC in \(type)") }
            chunkTypes.append(type)
            switch type {
            case "IHDR":
                width = data[0..<4].reduce(0) { $0 << 8 | Int($1) }
                height = data[4..<8].reduce(0) { $0 << 8 | Int($1) }
                guard data[8] == 8, data[10] == 0, data[11] == 0, data[12] == 0 else { throw Failure(description: "unsupported IHDR \(data)") }
                switch data[9] {
                case 0: channels = 1
                case 2: channels = 3
                case 6: channels = 4
                default: throw Failure(description: "colour type \(data[9])")
                }
            case "tEXt":
                let nul = data.firstIndex(of: 0)!
                text[String(data[..<nul].map { Character(Unicode.Scalar($0)) })] =
                    String(data[(nul + 1)...].map { Character(Unicode.Scalar($0)) })
            case "iTXt":
                let nul = data.firstIndex(of: 0)!
                guard data[nul + 1] == 0 else { throw Failure(description: "compressed iTXt") }
                var rest = data[(nul + 3)...]
                rest = rest[(rest.firstIndex(of: 0)! + 1)...]   // language tag
                rest = rest[(rest.firstIndex(of: 0)! + 1)...]   // translated keyword
                internationalText[String(decoding: data[..<nul], as: UTF8.self)] = String(decoding: rest, as: UTF8.self)
            case "IDAT":
                compressed += data
            default:
                break
            }
            position += 12 + length
        }
        guard chunkTypes.first == "IHDR", chunkTypes.last == "IEND" else { throw Failure(description: "chunk order \(chunkTypes)") }
        var buffer = ByteBuffer(bytes: compressed)
        var inflated = try buffer.decompress(with: .zlib())
        let raw = inflated.readBytes(length: inflated.readableBytes)!
        let stride = width * channels
        guard raw.count == height * (stride + 1) else { throw Failure(description: "inflated \(raw.count) bytes") }
        pixels = [UInt8](repeating: 0, count: height * stride)
        for y in 0..<height {
            let filter = raw[y * (stride + 1)]
            for i in 0..<stride {
                let x = raw[y * (stride + 1) + 1 + i]
                let a = i >= channels ? Int(pixels[y * stride + i - channels]) : 0
                let b = y > 0 ? Int(pixels[(y - 1) * stride + i]) : 0
                let c = (i >= channels && y > 0) ? Int(pixels[(y - 1) * stride + i - channels]) : 0
                let predictor: Int
                switch filter {
                case 0: predictor = 0
                case 1: predictor = a
                case 2: predictor = b
                case 3: predictor = (a + b) / 2
                case 4:
                    let p = a + b - c
                    let (pa, pb, pc) = (abs(p - a), abs(p - b), abs(p - c))
                    predictor = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
                default: throw Failure(description: "filter \(filter)")
                }
                pixels[y * stride + i] = x &+ UInt8(predictor & 0xFF)
            }
        }
    }
}

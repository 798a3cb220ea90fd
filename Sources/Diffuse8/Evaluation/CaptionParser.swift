#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One shape a caption asks for: "a small red circle".
public struct ExpectedShape: Equatable, Sendable {
    public var size: String
    public var colour: String
    public var shape: String

    public init(size: String, colour: String, shape: String) {
        self.size = size
        self.colour = colour
        self.shape = shape
    }
}

/// How a caption places its shapes.
public enum ExpectedLayout: Equatable, Sendable {
    /// One shape at a named place: "on the left", "on the right", "at the top", "at the bottom", "in the centre".
    case position(String)
    /// Two shapes: the first is "above", "below", "left of" or "right of" the second.
    case relation(String)
    /// Three shapes "from left to right", in caption order.
    case leftToRight
}

/// What a caption of the shapes data set says: background, shapes and layout.
public struct ParsedCaption: Equatable, Sendable {
    public var background: String
    public var shapes: [ExpectedShape]
    public var layout: ExpectedLayout
}

/// A caption outside the data set's templates.
public struct CaptionParseError: Error, CustomStringConvertible {
    public let caption: String
    public let reason: String
    public var description: String {
        "cannot parse caption \"\(caption)\": \(reason). Captions follow the templates of training/dataset.py, e.g. "
            + "\"a small red circle above a large blue square on a white background\""
    }
}

/// Parses the templated captions of the embedded model's data set (`training/dataset.py`):
///
///     a {size} {colour} {shape} {position} on a {background} background
///     a {size} {colour} {shape} {above|below|left of|right of} a {size} {colour} {shape} on a {bg} background
///     a {size} {colour} {shape}, a ... and a ... from left to right on a {background} background
///
/// Limitations: only these three templates and the data set's words (`ShapesPalette`); case and extra
/// spaces are ignored.
public enum CaptionParser {
    public static let positions = ["on the left", "on the right", "at the top", "at the bottom", "in the centre"]
    public static let relations = ["above", "below", "left of", "right of"]
    public static let sizes = ["small", "large"]
    public static let shapeNames = ["circle", "square", "triangle"]

    public static func parse(_ caption: String) throws -> ParsedCaption {
        let text = caption.lowercased().split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        func fail(_ reason: String) -> CaptionParseError { CaptionParseError(caption: caption, reason: reason) }

        guard text.hasSuffix(" background"), let onA = text.ranges(of: " on a ").last else {
            throw fail("it must end with \"on a <colour> background\"")
        }
        let background = String(text[onA.upperBound...].dropLast(" background".count))
        guard ShapesPalette.backgrounds.contains(where: { $0.name == background }) else {
            throw fail("unknown background colour '\(background)'")
        }
        var body = String(text[..<onA.lowerBound])

        if body.hasSuffix(" from left to right") {
            body = String(body.dropLast(" from left to right".count))
            let phrases = body.replacing(" and ", with: ", ").split(separator: ", ").map(String.init)
            guard phrases.count == 3 else { throw fail("a left-to-right caption needs three shapes") }
            return ParsedCaption(background: background, shapes: try phrases.map { try shape($0, fail) },
                                 layout: .leftToRight)
        }
        for relation in relations {
            if let r = body.firstRange(of: " \(relation) a ") {
                let first = String(body[..<r.lowerBound])
                let second = "a " + body[r.upperBound...]
                return ParsedCaption(background: background, shapes: [try shape(first, fail), try shape(second, fail)],
                                     layout: .relation(relation))
            }
        }
        for position in positions where body.hasSuffix(" " + position) {
            let phrase = String(body.dropLast(position.count + 1))
            return ParsedCaption(background: background, shapes: [try shape(phrase, fail)], layout: .position(position))
        }
        throw fail("no position, relation or \"from left to right\" found")
    }

    private static func shape(_ phrase: String, _ fail: (String) -> CaptionParseError) throws -> ExpectedShape {
        let words = phrase.split(separator: " ").map(String.init)
        guard words.count == 4, words[0] == "a" || words[0] == "an" else {
            throw fail("'\(phrase)' is not \"a <size> <colour> <shape>\"")
        }
        guard sizes.contains(words[1]) else { throw fail("unknown size '\(words[1])'") }
        guard ShapesPalette.shapeColours.contains(where: { $0.name == words[2] }) else {
            throw fail("unknown colour '\(words[2])'")
        }
        guard shapeNames.contains(words[3]) else { throw fail("unknown shape '\(words[3])'") }
        return ExpectedShape(size: words[1], colour: words[2], shape: words[3])
    }
}

/// The RGB palette of `training/dataset.py` (shape colours and background colours).
public enum ShapesPalette {
    public struct Entry: Sendable {
        public let name: String
        public let rgb: (Int, Int, Int)
    }

    public static let shapeColours: [Entry] = [
        Entry(name: "red", rgb: (220, 30, 30)), Entry(name: "green", rgb: (30, 170, 50)),
        Entry(name: "blue", rgb: (30, 70, 220)), Entry(name: "yellow", rgb: (245, 215, 30)),
        Entry(name: "orange", rgb: (245, 130, 20)), Entry(name: "purple", rgb: (130, 40, 170)),
        Entry(name: "cyan", rgb: (40, 200, 220)), Entry(name: "pink", rgb: (245, 120, 190)),
    ]
    public static let backgrounds: [Entry] = [
        Entry(name: "white", rgb: (245, 245, 245)), Entry(name: "black", rgb: (15, 15, 15)),
        Entry(name: "gray", rgb: (128, 128, 128)), Entry(name: "brown", rgb: (110, 70, 40)),
    ]
    /// Shape colours first, then backgrounds: the labels a pixel can get.
    public static let all: [Entry] = shapeColours + backgrounds
}

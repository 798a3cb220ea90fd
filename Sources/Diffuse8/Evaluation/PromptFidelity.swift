#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A shape found in an image by `PromptFidelity.analyse`.
public struct DetectedShape: Equatable, Sendable {
    public var colour: String
    public var shape: String
    public var size: String
    /// Centroid in pixels (x right, y down).
    public var centroidX: Double
    public var centroidY: Double
    public var area: Int
    /// Inclusive bounding box.
    public var minX: Int, minY: Int, maxX: Int, maxY: Int
    /// area / bounding-box area: ~1 square, ~0.78 circle, ~0.5 triangle.
    public var fillRatio: Double
}

/// One attribute the caption asks for and what the image shows.
public struct AttributeCheck: Equatable, Sendable {
    /// "background", "count", "colour", "shape", "size", "position", "relation" or "order".
    public var kind: String
    /// Which attribute, e.g. "shape 2 colour".
    public var name: String
    public var expected: String
    public var observed: String
    public var correct: Bool
}

/// The result of checking one image against its caption.
public struct FidelityReport: Sendable {
    public var caption: ParsedCaption
    public var background: String
    public var detected: [DetectedShape]
    public var checks: [AttributeCheck]
    public var correctCount: Int { checks.filter(\.correct).count }
    /// Fraction of the caption's attributes read back correctly, in [0, 1].
    public var score: Double { checks.isEmpty ? 0 : Double(correctCount) / Double(checks.count) }
}

/// Prompt fidelity for the embedded default model: does a generated image show what its caption
/// (a `training/dataset.py` template, see `CaptionParser`) asks for?
///
/// How the image is read (RGB bytes, row-major, `width * height * 3`; any size, geometry scales with width/64):
/// - every pixel gets the nearest `ShapesPalette` colour, or none when it is farther than
///   `maximumColourDistance` (blurred edges);
/// - background = the most common colour;
/// - shapes = 4-connected components of one non-background colour with at least `minimumInterior`
///   interior pixels (pixels whose 4 neighbours share the colour; drops thin edge halos); boundary rows and
///   columns with a single pixel are trimmed from the bounding box;
/// - shape kind from the bounding-box corners (a square fills all 4, a triangle the 2 bottom ones, a circle
///   none) and the fill ratio (square >= 0.88, circle >= 0.66, else triangle); size from the bounding box's longer side (small 12 px,
///   large 24 px at 64x64: threshold 18); position from the centroid (nearest of the 5 named places);
///   relations from the dominant axis between the two centroids.
///
/// Scoring: attributes = background, shape count, colour/shape/size of each shape, and one layout
/// attribute (position, relation or left-to-right order). Caption shapes are matched to detected ones by
/// the assignment that gets the most attributes right (so a swapped colour costs only that colour).
/// Limitations: flat-colour images of the data set's palette only; touching shapes of one colour read as one.
public enum PromptFidelity {
    public static let maximumColourDistance = 90.0

    /// Detects background and shapes (largest first).
    public static func analyse(image: [UInt8], width: Int, height: Int) -> (background: String, shapes: [DetectedShape]) {
        precondition(image.count == width * height * 3, "image must hold width * height * 3 bytes")
        let palette = ShapesPalette.all
        let scale = Double(width) / 64
        var labels = [Int](repeating: -1, count: width * height)
        var counts = [Int](repeating: 0, count: palette.count)
        for p in 0..<(width * height) {
            let r = Double(image[3 * p]), g = Double(image[3 * p + 1]), b = Double(image[3 * p + 2])
            var best = -1
            var bestDistance = maximumColourDistance * maximumColourDistance
            for (i, entry) in palette.enumerated() {
                let dr = r - Double(entry.rgb.0), dg = g - Double(entry.rgb.1), db = b - Double(entry.rgb.2)
                let d = dr * dr + dg * dg + db * db
                if d < bestDistance { bestDistance = d; best = i }
            }
            labels[p] = best
            if best >= 0 { counts[best] += 1 }
        }
        let backgroundLabel = counts.indices.max { counts[$0] < counts[$1] }!

        let minimumInterior = max(4, Int((10 * scale * scale).rounded()))
        var visited = [Bool](repeating: false, count: width * height)
        var shapes: [DetectedShape] = []
        var stack: [Int] = []
        for start in 0..<(width * height) where !visited[start] && labels[start] >= 0 && labels[start] != backgroundLabel {
            let label = labels[start]
            var pixels: [Int] = []
            visited[start] = true
            stack.append(start)
            while let p = stack.popLast() {
                pixels.append(p)
                let x = p % width, y = p / width
                for (nx, ny) in [(x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)]
                where nx >= 0 && ny >= 0 && nx < width && ny < height {
                    let q = ny * width + nx
                    if !visited[q] && labels[q] == label { visited[q] = true; stack.append(q) }
                }
            }
            let interior = pixels.filter { p in
                let x = p % width, y = p / width
                return x > 0 && y > 0 && x < width - 1 && y < height - 1 && labels[p - 1] == label
                    && labels[p + 1] == label && labels[p - width] == label && labels[p + width] == label
            }.count
            if interior < minimumInterior { continue }
            shapes.append(describe(pixels, label: label, labels: labels, width: width, scale: scale))
        }
        shapes.sort { $0.area > $1.area }
        return (palette[backgroundLabel].name, shapes)
    }

    private static func describe(_ pixels: [Int], label: Int, labels: [Int], width: Int, scale: Double) -> DetectedShape {
        var minX = Int.max, minY = Int.max, maxX = Int.min, maxY = Int.min
        var sumX = 0.0, sumY = 0.0
        for p in pixels {
            let x = p % width, y = p / width
            minX = min(minX, x); maxX = max(maxX, x); minY = min(minY, y); maxY = max(maxY, y)
            sumX += Double(x); sumY += Double(y)
        }
        // Trim boundary rows/columns holding a single pixel (stray edge pixels of generated images), at most 2 a side.
        var rowCounts = [Int: Int](), columnCounts = [Int: Int]()
        for p in pixels { rowCounts[p / width, default: 0] += 1; columnCounts[p % width, default: 0] += 1 }
        for _ in 0..<2 {
            if maxY - minY > 4 && rowCounts[minY, default: 0] <= 1 { minY += 1 }
            if maxY - minY > 4 && rowCounts[maxY, default: 0] <= 1 { maxY -= 1 }
            if maxX - minX > 4 && columnCounts[minX, default: 0] <= 1 { minX += 1 }
            if maxX - minX > 4 && columnCounts[maxX, default: 0] <= 1 { maxX -= 1 }
        }
        let w = maxX - minX + 1, h = maxY - minY + 1
        let inside = pixels.filter { p in
            let x = p % width, y = p / width
            return x >= minX && x <= maxX && y >= minY && y <= maxY
        }.count
        let fill = Double(inside) / Double(w * h)
        // Corner blocks of the bounding box: filled when at least half their pixels have the shape's colour.
        let block = max(1, min(w, h) / 6)
        func cornerFilled(_ x0: Int, _ y0: Int) -> Bool {
            var n = 0
            for y in y0..<(y0 + block) { for x in x0..<(x0 + block) where labels[y * width + x] == label { n += 1 } }
            return 2 * n >= block * block
        }
        let topLeft = cornerFilled(minX, minY), topRight = cornerFilled(maxX - block + 1, minY)
        let bottomLeft = cornerFilled(minX, maxY - block + 1), bottomRight = cornerFilled(maxX - block + 1, maxY - block + 1)
        let filledCorners = [topLeft, topRight, bottomLeft, bottomRight].filter { $0 }.count
        let shape: String
        if filledCorners >= 3 || fill >= 0.88 {
            shape = "square"
        } else if bottomLeft && bottomRight && !topLeft && !topRight {
            shape = "triangle"
        } else {
            shape = fill >= 0.66 ? "circle" : "triangle"
        }
        return DetectedShape(
            colour: ShapesPalette.all[label].name, shape: shape, size: Double(max(w, h)) >= 18 * scale ? "large" : "small",
            centroidX: sumX / Double(pixels.count), centroidY: sumY / Double(pixels.count), area: pixels.count,
            minX: minX, minY: minY, maxX: maxX, maxY: maxY, fillRatio: fill)
    }

    /// Checks `image` against `caption`; throws `CaptionParseError` for a caption outside the templates.
    public static func evaluate(caption: String, image: [UInt8], width: Int, height: Int) throws -> FidelityReport {
        let parsed = try CaptionParser.parse(caption)
        let (background, detected) = analyse(image: image, width: width, height: height)
        let candidates = Array(detected.prefix(8))
        let expected = parsed.shapes

        // Best injective assignment expected shape -> detected shape (or none), by attributes right.
        var best: [AttributeCheck] = []
        var bestCorrect = -1
        var assignment = [Int?](repeating: nil, count: expected.count)
        func search(_ i: Int) {
            if i == expected.count {
                let checks = shapeChecks(expected, assignment.map { $0.map { candidates[$0] } }, parsed.layout,
                                         width: width, height: height)
                let correct = checks.filter(\.correct).count
                if correct > bestCorrect { bestCorrect = correct; best = checks }
                return
            }
            assignment[i] = nil
            search(i + 1)
            for d in candidates.indices where !assignment[..<i].contains(where: { $0 == d }) {
                assignment[i] = d
                search(i + 1)
            }
            assignment[i] = nil
        }
        search(0)

        var checks = [AttributeCheck(kind: "background", name: "background", expected: parsed.background,
                                     observed: background, correct: background == parsed.background),
                      AttributeCheck(kind: "count", name: "number of shapes", expected: String(expected.count),
                                     observed: String(detected.count), correct: detected.count == expected.count)]
        checks += best
        return FidelityReport(caption: parsed, background: background, detected: detected, checks: checks)
    }

    private static func shapeChecks(_ expected: [ExpectedShape], _ matched: [DetectedShape?], _ layout: ExpectedLayout,
                                     width: Int, height: Int) -> [AttributeCheck] {
        var checks: [AttributeCheck] = []
        for (i, (want, got)) in zip(expected, matched).enumerated() {
            let prefix = "shape \(i + 1) "
            checks.append(AttributeCheck(kind: "colour", name: prefix + "colour", expected: want.colour,
                                         observed: got?.colour ?? "missing", correct: got?.colour == want.colour))
            checks.append(AttributeCheck(kind: "shape", name: prefix + "shape", expected: want.shape,
                                         observed: got?.shape ?? "missing", correct: got?.shape == want.shape))
            checks.append(AttributeCheck(kind: "size", name: prefix + "size", expected: want.size,
                                         observed: got?.size ?? "missing", correct: got?.size == want.size))
        }
        let found = matched.compactMap { $0 }
        switch layout {
        case .position(let where_):
            let observed = found.count == 1 ? position(of: found[0], width: width, height: height) : "missing"
            checks.append(AttributeCheck(kind: "position", name: "position", expected: where_, observed: observed,
                                         correct: observed == where_))
        case .relation(let relation):
            var observed = "missing"
            if found.count == 2 {
                let dx = found[0].centroidX - found[1].centroidX, dy = found[0].centroidY - found[1].centroidY
                observed = abs(dy) > abs(dx) ? (dy < 0 ? "above" : "below") : (dx < 0 ? "left of" : "right of")
            }
            checks.append(AttributeCheck(kind: "relation", name: "relation", expected: relation, observed: observed,
                                         correct: observed == relation))
        case .leftToRight:
            var observed = "missing"
            if found.count == matched.count {
                let order = found.indices.sorted { found[$0].centroidX < found[$1].centroidX }
                observed = order == Array(found.indices) ? "left to right" : order.map { String($0 + 1) }.joined(separator: ",")
            }
            checks.append(AttributeCheck(kind: "order", name: "left-to-right order", expected: "left to right",
                                         observed: observed, correct: observed == "left to right"))
        }
        return checks
    }

    /// The nearest of the data set's 5 named places (anchors at 14/32/50 px of 64, scaled).
    static func position(of shape: DetectedShape, width: Int, height: Int) -> String {
        let sx = Double(width) / 64, sy = Double(height) / 64
        let anchors: [(String, Double, Double)] = [
            ("on the left", 14, 32), ("on the right", 50, 32), ("at the top", 32, 14), ("at the bottom", 32, 50),
            ("in the centre", 32, 32)]
        return anchors.min { a, b in
            func distance(_ p: (String, Double, Double)) -> Double {
                let dx = shape.centroidX - p.1 * sx, dy = shape.centroidY - p.2 * sy
                return dx * dx + dy * dy
            }
            return distance(a) < distance(b)
        }!.0
    }
}

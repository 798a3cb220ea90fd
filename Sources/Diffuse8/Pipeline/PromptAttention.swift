/// AUTOMATIC1111's prompt emphasis syntax, parsed as its `parse_prompt_attention` does:
///
/// - `(text)` multiplies the attention to `text` by 1.1, `[text]` divides it by 1.1; they nest and multiply.
/// - `(text:1.3)` sets the factor to 1.3 (any `[+-]?[.0-9]+`).
/// - `\(`, `\)`, `\[`, `\]`, `\\` are the literal characters; a lone backslash disappears.
/// - A bracket left open applies its factor to the end of the prompt; an unmatched `)` or `]`, and a `:number)`
///   outside round brackets, are plain text.
/// - `BREAK` (a whole word, upper case) ends the current 75-token chunk.
///
/// Adjacent pieces with equal weights are merged. A1111's quirks are kept (e.g. a `BREAK` inside brackets is
/// scaled like any piece and then no longer breaks), so prompts written for it mean the same here.
public enum PromptAttention {
    /// One piece of text with its attention multiplier; `weight == -1` marks a `BREAK`.
    public struct Piece: Equatable, Sendable {
        public var text: String
        public var weight: Double
        public var isBreak: Bool { text == "BREAK" && weight == -1 }
    }

    public static func parse(_ prompt: String) -> [Piece] {
        var result: [Piece] = []
        var round: [Int] = []
        var square: [Int] = []
        func multiply(from start: Int, _ factor: Double) {
            for i in start..<result.count { result[i].weight *= factor }
        }
        let characters = Array(prompt)
        var i = 0
        while i < characters.count {
            let c = characters[i]
            if c == "\\" {
                if i + 1 < characters.count, "()[]\\".contains(characters[i + 1]) {
                    result.append(Piece(text: String(characters[i + 1]), weight: 1))
                    i += 2
                } else {
                    result.append(Piece(text: "", weight: 1))
                    i += 1
                }
            } else if c == "(" {
                round.append(result.count); i += 1
            } else if c == "[" {
                square.append(result.count); i += 1
            } else if c == ":" {
                if let (weight, end) = explicitWeight(characters, colon: i) {
                    if let start = round.popLast(), let value = Double(weight) {
                        multiply(from: start, value)
                    } else {
                        appendText(String(characters[i..<end]), to: &result)
                    }
                    i = end
                } else {
                    appendText(":", to: &result)
                    i += 1
                }
            } else if c == ")" || c == "]" {
                if c == ")", let start = round.popLast() {
                    multiply(from: start, 1.1)
                } else if c == "]", let start = square.popLast() {
                    multiply(from: start, 1 / 1.1)
                } else {
                    appendText(String(c), to: &result)
                }
                i += 1
            } else {
                var end = i
                while end < characters.count, !"\\()[]:".contains(characters[end]) { end += 1 }
                appendText(String(characters[i..<end]), to: &result)
                i = end
            }
        }
        for start in round { multiply(from: start, 1.1) }
        for start in square { multiply(from: start, 1 / 1.1) }
        if result.isEmpty { result = [Piece(text: "", weight: 1)] }
        var merged: [Piece] = []
        for piece in result {
            if let last = merged.last, last.weight == piece.weight {
                merged[merged.count - 1].text += piece.text
            } else {
                merged.append(piece)
            }
        }
        return merged
    }

    /// At a `:`, the regex `:\s*([+-]?[.\d]+)\s*\)`: the number's text and the index after the `)`, or nil.
    private static func explicitWeight(_ c: [Character], colon: Int) -> (String, Int)? {
        var i = colon + 1
        while i < c.count, c[i].isWhitespace { i += 1 }
        let start = i
        if i < c.count, c[i] == "+" || c[i] == "-" { i += 1 }
        let digitsStart = i
        while i < c.count, c[i] == "." || c[i].isASCII && c[i].isNumber { i += 1 }
        guard i > digitsStart else { return nil }
        let number = String(c[start..<i])
        while i < c.count, c[i].isWhitespace { i += 1 }
        guard i < c.count, c[i] == ")" else { return nil }
        return (number, i + 1)
    }

    /// Appends text, split at each `BREAK` (the regex `\s*\bBREAK\b\s*`) into pieces with a break marker between.
    private static func appendText(_ text: String, to result: inout [Piece]) {
        let c = Array(text)
        func isWord(_ x: Character) -> Bool { x.isLetter || x.isNumber || x == "_" }
        var parts: [String] = []
        var partStart = 0
        var i = 0
        while i + 5 <= c.count {
            if String(c[i..<(i + 5)]) == "BREAK", i == 0 || !isWord(c[i - 1]), i + 5 == c.count || !isWord(c[i + 5]) {
                var left = i
                while left > partStart, c[left - 1].isWhitespace { left -= 1 }
                var right = i + 5
                while right < c.count, c[right].isWhitespace { right += 1 }
                parts.append(String(c[partStart..<left]))
                partStart = right
                i = right
            } else {
                i += 1
            }
        }
        parts.append(String(c[partStart...]))
        for (index, part) in parts.enumerated() {
            if index > 0 { result.append(Piece(text: "BREAK", weight: -1)) }
            result.append(Piece(text: part, weight: 1))
        }
    }
}

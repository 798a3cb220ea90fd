import XCTest
@testable import Diffuse8

/// Percentile Quant statistics, level selection and recipe validation, on hand-computed cases.
final class QuantRecipeTests: XCTestCase {
    /// T = 4 steps, 2 batches each: per-step batch amax values
    /// t0: 10, 6   t1: 4, 2   t2: 3, 5   t3: 1, 9
    private func table() -> LayerStatistics {
        var s = LayerStatistics(name: "x", kind: .conv2d, steps: 4, channels: nil, recordsOutput: false, reservoirCapacity: 0)
        for (t, pair) in [(10, 6), (4, 2), (3, 5), (1, 9)].enumerated() {
            s.addBatch(step: t, amax: Float(pair.0))
            s.addBatch(step: t, amax: Float(pair.1))
        }
        return s
    }

    private func amax(_ method: CalibrationMethod, _ p: Double, _ c: CollectMethod) -> Float {
        QuantizationRecipe.activationAmax(table(), method: method, percentile: p, collect: c)
    }

    func testMaxCalibration() {
        XCTAssertEqual(amax(.max, 0.5, .minMean), 10)  // max over everything; p ignored
    }

    func testPercentileCollectMethodsOverAllSteps() {
        // means 8, 3, 4, 5; maxes 10, 4, 5, 9; mins 6, 2, 3, 1
        XCTAssertEqual(amax(.percentile, 1, .minMean), 3)
        XCTAssertEqual(amax(.percentile, 1, .minMax), 4)
        XCTAssertEqual(amax(.percentile, 1, .meanMax), 7)   // (10+4+5+9)/4
        XCTAssertEqual(amax(.percentile, 1, .globalMin), 1)
    }

    func testPercentileUsesFirstFloorTPSteps() {
        // p = 0.6 → K = floor(2.4) = 2 → steps 0, 1.
        XCTAssertEqual(amax(.percentile, 0.6, .minMean), 3)
        XCTAssertEqual(amax(.percentile, 0.6, .meanMax), 7)    // (10+4)/2
        XCTAssertEqual(amax(.percentile, 0.6, .globalMin), 2)
        // p = 0.25 → K = 1 → step 0 only.
        XCTAssertEqual(amax(.percentile, 0.25, .minMean), 8)   // true mean (10+6)/2, not NVIDIA's sum/T
        XCTAssertEqual(amax(.percentile, 0.25, .minMax), 10)
        // p = 0.1 → K = floor(0.4) = 0 → at least one step.
        XCTAssertEqual(amax(.percentile, 0.1, .minMax), 10)
    }

    func testLevels() throws {
        let names: [(String, LayerStatistics.Kind)] = [
            ("down_blocks.0.resnets.0.conv1", .conv2d), ("conv_in", .conv2d), ("up_blocks.0.resnets.0.conv_shortcut", .conv2d),
            ("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj", .linear),
            ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", .linear),
            ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", .linear),
            ("down_blocks.0.attentions.0.proj_in", .linear), ("time_embedding.linear_1", .linear),
            ("down_blocks.0.resnets.0.time_emb_proj", .linear), ("add_embedding.linear_2", .linear)]
        func selected(_ level: String) throws -> [Bool] {
            let l = try QuantizationLevel(parsing: level)
            return names.map { l.quantizes($0.0, kind: $0.1) }
        }
        XCTAssertEqual(try selected("1"), [true, false, false, false, false, false, false, false, false, false])
        XCTAssertEqual(try selected("2"), [true, false, false, true, false, false, false, false, false, false])
        XCTAssertEqual(try selected("2.5"), [true, false, false, true, true, false, false, false, false, false])
        XCTAssertEqual(try selected("3"), [true, false, false, true, true, true, true, false, false, false])
        XCTAssertEqual(try selected("4"), try selected("3"))
    }

    func testBadRecipesGiveClearErrors() {
        XCTAssertThrowsError(try QuantizationLevel(parsing: "5")) { XCTAssertTrue("\($0)".contains("1, 2, 2.5, 3, 4")) }
        XCTAssertThrowsError(try SmoothingChoice(parsing: "1.5"))
        XCTAssertThrowsError(try SmoothingChoice(parsing: "sometimes"))
        for p in [0.0, -0.1, 1.01] {
            var r = QuantizationRecipe()
            r.percentile = p
            XCTAssertThrowsError(try r.validate()) { XCTAssertTrue("\($0)".contains("(0, 1]")) }
        }
        var r = QuantizationRecipe()
        r.level = .fp8Attention
        r.format = .int8
        XCTAssertThrowsError(try r.validate()) { XCTAssertTrue("\($0)".contains("--format fp8")) }
        r.format = .fp8
        XCTAssertNoThrow(try r.validate())
        XCTAssertEqual(r.alphaGrid.count, 11)
        XCTAssertEqual(r.alphaGrid.last, 1)
    }

    func testReservoirKeepsSmallestKeysWhateverTheOrder() {
        var a = RowReservoir(capacity: 3, width: 1), b = RowReservoir(capacity: 3, width: 1)
        let keys: [UInt64] = [50, 10, 40, 30, 20, 60]
        for k in keys { a.offer(key: k, row: [Float(k)]) }
        for k in keys.reversed() { b.offer(key: k, row: [Float(k)]) }
        a.sort(); b.sort()
        XCTAssertEqual(a.keys, [10, 20, 30])
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.rows, [10, 20, 30])
    }
}

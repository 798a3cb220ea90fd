import Foundation
import XCTest
@testable import Diffuse8

/// The recommended recipe and its guard against calibration sets too small to trust clipped or smoothed ranges:
/// below `minimumCalibrationPrompts` the applied recipe is max calibration without SmoothQuant, and it says so.
final class QuantRecipeGuardTests: ExecutableTestCase {
    func testRecommendedRecipe() {
        let r = QuantizationRecipe.recommended
        XCTAssertEqual(r.calibration, .percentile)
        XCTAssertEqual(r.collectMethod, .meanMax)
        XCTAssertEqual(r.smoothing, .fixed(0.8))
        XCTAssertEqual(r.minimumCalibrationPrompts, 32)
        XCTAssertEqual(QuantizationRecipe.naiveMax.calibration, .max)
        XCTAssertEqual(QuantizationRecipe.naiveMax.smoothing, SmoothingChoice.none)
        XCTAssertEqual(QuantizationRecipe.nvidia.collectMethod, .minMean)
        XCTAssertEqual(QuantizationRecipe.nvidia.minimumCalibrationPrompts, 0)
    }

    func testFewPromptsFallBackToMaxWithoutSmoothing() {
        let (few, warning) = QuantizationRecipe.recommended.applicable(toCalibrationPrompts: 6)
        XCTAssertEqual(few.calibration, .max)
        XCTAssertEqual(few.smoothing, SmoothingChoice.none)
        XCTAssertEqual(few.format, QuantizationRecipe.recommended.format)
        let text = try! XCTUnwrap(warning)
        XCTAssertTrue(text.contains("6 prompts") && text.contains("fewer than 32") && text.contains("α 0.8"), text)
        // At the minimum the recipe applies as given.
        let (enough, none) = QuantizationRecipe.recommended.applicable(toCalibrationPrompts: 32)
        XCTAssertEqual(enough.calibration, .percentile)
        XCTAssertEqual(enough.smoothing, .fixed(0.8))
        XCTAssertNil(none)
        // Nothing to guard: naive max, dynamic, a minimum of 0.
        XCTAssertNil(QuantizationRecipe.naiveMax.applicable(toCalibrationPrompts: 1).warning)
        var dynamic = QuantizationRecipe.recommended
        dynamic.dynamic = true
        XCTAssertNil(dynamic.applicable(toCalibrationPrompts: 1).warning)
        var forced = QuantizationRecipe.recommended
        forced.minimumCalibrationPrompts = 0
        XCTAssertEqual(forced.applicable(toCalibrationPrompts: 1).recipe.smoothing, .fixed(0.8))
        // Percentile alone (no smoothing) is guarded too.
        var clipOnly = QuantizationRecipe.recommended
        clipOnly.smoothing = .none
        XCTAssertEqual(clipOnly.applicable(toCalibrationPrompts: 4).recipe.calibration, .max)
    }

    /// On real statistics (tiny SD1.5 fixture, 4 prompts): the guarded recipe uses each Conv2d input's largest
    /// amax over all steps and batches, and no smoothing; with the minimum lowered to 4, the recipe applies.
    func testQuantizerAppliesTheGuardAndCountsPrompts() throws {
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"))
        var o = CalibrationOptions(steps: 2)
        o.reservoirCapacity = 16
        let prompts = ["a red circle", "a blue square", "a yellow star", "two purple dots"]
        let stats = try Calibrator.calibrate(pipeline, prompts: prompts, options: o)
        XCTAssertEqual(Quantizer.calibrationPrompts(stats), 4)
        o.shardCount = 2
        XCTAssertEqual(Quantizer.calibrationPrompts(try Calibrator.calibrate(pipeline, prompts: prompts, options: o)), 2)

        let guarded = try Quantizer.quantize(pipeline.unet!, statistics: stats, recipe: .recommended)
        XCTAssertNotNil(guarded.recipeWarning)
        XCTAssertEqual(guarded.recipe.calibration, .max)
        XCTAssertTrue(guarded.alphas.isEmpty)
        for layer in guarded.layers where layer.kind == .conv2d {
            let s = try XCTUnwrap(stats.layer(named: layer.name))
            XCTAssertEqual(layer.inputAmax, s.amaxMax.max())
            XCTAssertNil(layer.smoothing)
        }
        var allowed = QuantizationRecipe.recommended
        allowed.minimumCalibrationPrompts = 4
        let full = try Quantizer.quantize(pipeline.unet!, statistics: stats, recipe: allowed)
        XCTAssertNil(full.recipeWarning)
        XCTAssertEqual(full.recipe.calibration, .percentile)
        XCTAssertEqual(full.alphas.count, full.layers.filter { $0.kind == .linear }.count)
        XCTAssertTrue(full.alphas.values.allSatisfy { $0 == 0.8 })
    }

    func testQuantizeCommandDefaultsToTheRecommendedPresetAndWarns() throws {
        let s = scratch.path
        let model = Fixtures.path("tiny-sd15")
        try "a red circle\na blue square\n".write(toFile: s + "/calib.txt", atomically: true, encoding: .utf8)
        var r = try run(["calibrate", "--model", model, "--calib-prompts", s + "/calib.txt", "--calib-steps", "2", "--reservoir-rows", "8", "-o", s + "/st.d8s"])
        XCTAssertEqual(r.status, 0, r.stderr)
        r = try run(["quantize", "--model", model, "--stats", s + "/st.d8s", "-o", s + "/q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("warning: the calibration statistics cover 2 prompts"), r.stderr)
        var manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: s + "/q/unet/quantization.json"))) as! [String: Any]
        XCTAssertEqual(manifest["calibration"] as? String, "max")
        XCTAssertEqual(manifest["alpha"] as? String, "none")
        // --min-calib-prompts 0 forces the preset's recipe: mean-max and α 0.8 are what the folder records.
        r = try run(["quantize", "--model", model, "--stats", s + "/st.d8s", "--min-calib-prompts", "0", "-o", s + "/q0"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stderr.contains("warning"), r.stderr)
        manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: s + "/q0/unet/quantization.json"))) as! [String: Any]
        XCTAssertEqual(manifest["calibration"] as? String, "percentile")
        XCTAssertEqual(manifest["collect_method"] as? String, "mean-max")
        XCTAssertEqual(manifest["alpha"] as? String, "0.8")
        // Presets and their refusals.
        r = try run(["quantize", "--model", model, "--stats", s + "/st.d8s", "--preset", "nvidia", "-o", s + "/qn"])
        XCTAssertEqual(r.status, 0, r.stderr)
        manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: s + "/qn/unet/quantization.json"))) as! [String: Any]
        XCTAssertEqual(manifest["collect_method"] as? String, "min-mean")
        XCTAssertEqual(manifest["alpha"] as? String, "0.8")
        r = try run(["quantize", "--model", model, "--stats", s + "/st.d8s", "--preset", "best", "-o", s + "/qx"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("recommended, nvidia or naive"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: s + "/qx"))
    }
}

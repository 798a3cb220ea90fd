import Foundation
import XCTest
@testable import Diffuse8

/// LoRA merging against diffusers' `load_lora_weights` + `fuse_lora` on kohya-layout files (`tools/reference/lora.py`):
/// SD1.x (diffusers module names, a LoCon 3×3 conv, the 1×1 proj_in conv, text-encoder MLPs) and SDXL (LDM numbering,
/// both text encoders).
final class LoRATests: XCTestCase {
    private var temporary: String?
    override func tearDown() { FormatsTestFiles.remove(temporary) }

    func testSD15KohyaLoRAMatchesDiffusersFusedLoRA() throws {
        try check("tiny-sd15-kohya", folder: "tiny-sd15")
    }

    func testSDXLKohyaLoRAWithLDMNamesMatchesDiffusersFusedLoRA() throws {
        try check("tiny-sdxl-kohya", folder: "tiny-sdxl")
    }

    func testDiffusersPEFTLayoutMatchesDiffusersFusedLoRA() throws {
        try check("tiny-sd15-peft", folder: "tiny-sd15")
    }

    private func check(_ name: String, folder: String) throws {
        let reference = try Fixtures.reference("lora")
        let s = reference.metadata
        let lora = try LoRAFile(path: Fixtures.path("lora/\(name).safetensors"))
        let pipeline = try StableDiffusionPipeline(directory: Fixtures.path(folder), loras: [(lora, Float(s["weight"]!)!)])
        XCTAssertEqual(pipeline.loraWarnings, [], "every module of the file matches a layer")
        let request = GenerationRequest(prompt: s["prompt"]!, negativePrompt: s["negative_prompt"]!, steps: Int(s["steps"]!)!,
                                        guidanceScale: Float(s["guidance"]!)!, seed: UInt64(s["seed"]!)!,
                                        width: Int(s["width"]!)!, height: Int(s["height"]!)!, scheduler: .euler)
        let result = try pipeline.generate(request)
        try Fixtures.assertMatches(result, reference, key: name)

        // and the LoRA really changes the image (so the comparison above is not with the plain model)
        let plain = try StableDiffusionPipeline(directory: Fixtures.path(folder)).generate(request)
        XCTAssertGreaterThan(plain.latents.relativeL2(to: result.latents), 1e-2)
    }

    func testSDXLLoRAOnSD15ModelIsRejected() throws {
        let lora = try LoRAFile(path: Fixtures.path("lora/tiny-sdxl-kohya.safetensors"))
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"), loras: [(lora, 1)])) { error in
            XCTAssertTrue("\(error)".contains("SDXL"), "\(error)")
        }
    }

    func testLoRAMatchingNothingListsKeys() throws {
        let path = try write(["lora_unet_nothing_here.lora_down.weight": [2, 8], "lora_unet_nothing_here.lora_up.weight": [8, 2]])
        let lora = try LoRAFile(path: path)
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"), loras: [(lora, 1)])) { error in
            XCTAssertTrue("\(error)".contains("'lora_unet_nothing_here'"), "\(error)")
            XCTAssertTrue("\(error)".contains("matches a layer"), "\(error)")
        }
    }

    func testFileWithoutLoRAKeysIsRejected() throws {
        let path = try write(["model.diffusion_model.input_blocks.0.0.weight": [4]])
        XCTAssertThrowsError(try LoRAFile(path: path)) { XCTAssertTrue("\($0)".contains("no LoRA weights"), "\($0)") }
    }

    func testLDMNamesOfDiffusersModules() throws {
        let c = try UNetConfiguration(contentsOf: Fixtures.path("tiny-sdxl/unet/config.json"))
        XCTAssertEqual(LoRAMerge.ldmName("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", c),
                       "input_blocks.4.1.transformer_blocks.0.attn1.to_q")
        XCTAssertEqual(LoRAMerge.ldmName("down_blocks.0.downsamplers.0.conv", c), "input_blocks.3.0.op")
        XCTAssertEqual(LoRAMerge.ldmName("up_blocks.0.resnets.2.conv_shortcut", c), "output_blocks.2.0.skip_connection")
        XCTAssertEqual(LoRAMerge.ldmName("up_blocks.0.upsamplers.0.conv", c), "output_blocks.2.2.conv")
        XCTAssertEqual(LoRAMerge.ldmName("mid_block.resnets.1.time_emb_proj", c), "middle_block.2.emb_layers.1")
    }

    func testPromptTagsAreTakenOutWithTheirWeights() throws {
        let (prompt, tags) = try LoRAPromptTags.extract("a <lora:shapes:0.6>red circle<lora:colour> and <lora:both:0.5:0.9> more")
        XCTAssertEqual(prompt, "a red circle and  more")
        XCTAssertEqual(tags, [.init(name: "shapes", weight: 0.6), .init(name: "colour", weight: 1), .init(name: "both", weight: 0.5)])
        XCTAssertThrowsError(try LoRAPromptTags.extract("<lora:x:heavy>")) { XCTAssertTrue("\($0)".contains("'heavy'"), "\($0)") }
        XCTAssertThrowsError(try LoRAPromptTags.file(named: "x", in: nil)) { XCTAssertTrue("\($0)".contains("--lora-dir"), "\($0)") }
    }

    private func write(_ tensors: [String: [Int]]) throws -> String {
        let file = try FormatsTestFiles.zeros(tensors, name: "lora.safetensors")
        temporary = file.folder
        return file.path
    }
}

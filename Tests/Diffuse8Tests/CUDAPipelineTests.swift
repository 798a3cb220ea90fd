import Foundation
import XCTest
@testable import Diffuse8
import Diffuse8Checks

/// The CUDA pipeline (text encoders, UNet, VAE decoder on the GPU): on a GPU, the bars — text encoder
/// outputs within 5e-3 relative L2 of the CPU's, images ≥ 40 dB PSNR against the CPU image of the same seed.
/// Without a GPU those are skipped, and what is checked instead is that asking for CUDA fails with a clear error.
final class CUDAPipelineTests: XCTestCase {
    private func requireGPU() throws -> CUDAKernels {
        do { return try CUDAKernels() } catch let error as CUDAError { throw XCTSkip("no CUDA GPU: \(error)") }
    }

    func testTextEncodersMatchCPU() throws {
        let kernels = try requireGPU()
        for (folder, encoder, tokenizer) in [("tiny-sd15", "text_encoder", "tokenizer"), ("tiny-sdxl", "text_encoder_2", "tokenizer_2")] {
            let p = try CUDAPipelineCheck.textParity(directory: Fixtures.path(folder), encoder: encoder, tokenizer: tokenizer,
                                                     prompts: ["a red circle", ""], kernels: kernels)
            XCTAssertTrue(p.passed, "\(folder)/\(encoder): last \(p.last), penultimate \(p.penultimate), pooled \(p.pooled)")
        }
    }

    func testImagesMatchCPU() throws {
        _ = try requireGPU()
        for folder in ["tiny-sd15", "tiny-sdxl"] {
            let p = try CUDAPipelineCheck.imageParity(directory: Fixtures.path(folder),
                                                      request: GenerationRequest(prompt: "a red circle", steps: 4, guidanceScale: 5, seed: 3))
            XCTAssertTrue(p.passed, "\(folder): PSNR \(p.psnr) dB")
        }
    }

    /// The storage type belongs to a pipeline: an FP16 and a BF16 pipeline coexist and neither disturbs the other.
    func testPipelinesOfDifferentPrecisionCoexist() throws {
        _ = try requireGPU()
        let r = try CUDAPipelineCheck.mixedPrecision(directory: Fixtures.path("tiny-sd15"),
                                                     request: GenerationRequest(prompt: "a red circle", steps: 4, guidanceScale: 5, seed: 3))
        XCTAssertGreaterThanOrEqual(r.fp16, CUDAPipelineCheck.imagePSNRLimit)
        XCTAssertGreaterThanOrEqual(r.bf16, CUDAPipelineCheck.imagePSNRLimit)
        XCTAssertTrue(r.repeatIdentical, "the FP16 pipeline's image changed after the BF16 pipeline ran")
    }

    /// Without a GPU (CI), `.cuda` must fail at load with an error that says what is missing — not crash, not
    /// silently fall back to the CPU.
    func testCUDAWithoutGPUFailsClearly() throws {
        if (try? CUDAKernels()) != nil { throw XCTSkip("a CUDA GPU is present; covered by the parity tests") }
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: Fixtures.path("tiny-sd15"), device: .cuda)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("libcuda") || message.contains("GPU") || message.contains("CUDA"), message)
        }
    }

    /// Quantized folders run on CUDA too; a broken one is reported (naming its recipe file) while the host model loads,
    /// before any CUDA library is opened, so this holds with or without a GPU.
    func testBrokenQuantizedFolderOnCUDAIsReportedBeforeCUDAOpens() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("d8-cuda-quant-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        try FileManager.default.copyItem(at: URL(fileURLWithPath: Fixtures.path("tiny-sd15")), to: scratch)
        try Data("{}".utf8).write(to: scratch.appendingPathComponent("unet/" + QuantizedModelFolder.manifestName))
        XCTAssertThrowsError(try StableDiffusionPipeline(directory: scratch.path, device: .cuda)) { error in
            XCTAssertTrue("\(error)".contains(QuantizedModelFolder.manifestName), "\(error)")
        }
    }

    /// The CPU backend behind the protocols gives what the models give directly.
    func testCPUComponentsThroughProtocols() throws {
        let model = try CLIPTextModel.load(directory: Fixtures.path("tiny-sdxl/text_encoder_2"))
        let ids = [Array(repeating: 7, count: 77)]
        let direct = model(ids), viaProtocol = try (model as any TextEncoder).encode(ids)
        XCTAssertEqual(viaProtocol.lastHiddenState.scalars, direct.lastHiddenState.scalars)
        XCTAssertEqual(viaProtocol.penultimateHiddenState.scalars, direct.hiddenStates[direct.hiddenStates.count - 2].scalars)
        XCTAssertEqual(viaProtocol.pooled.scalars, direct.textEmbeds?.scalars)
        XCTAssertNotEqual(viaProtocol.pooled.scalars, direct.pooledOutput.scalars, "SDXL's second encoder pools through text_projection")
    }
}

/// BF16 host conversion (uploads with `storageType == .bfloat16`): round to nearest even, as torch's
/// `tensor.to(torch.bfloat16)` — expected bits printed by torch 2.15.
final class BFloat16ConversionTests: XCTestCase {
    func testMatchesTorchRounding() {
        let inputs: [Float] = [1.0, 1 + 0x1p-8, 1 + 3 * 0x1p-8, -2.0, 3.14159265, Float(bitPattern: 0x0001_16C2) /* 1e-40, subnormal */, 3.0e38, 65504 * 3, -0.0, .infinity, 0.1]
        let torchBits: [UInt16] = [0x3f80, 0x3f80, 0x3f82, 0xc000, 0x4049, 0x0001, 0x7f62, 0x4840, 0x8000, 0x7f80, 0x3dcd]
        XCTAssertEqual(inputs.map(CUDADataType.bfloat16Bits), torchBits)
        XCTAssertTrue(CUDADataType.float(bfloat16Bits: CUDADataType.bfloat16Bits(.nan)).isNaN)
        // Widening is exact: the bits land in the upper half of an FP32.
        XCTAssertEqual(CUDADataType.float(bfloat16Bits: 0x4049), Float(bitPattern: 0x4049_0000))
    }
}

/// Non-finite values after decoding become black pixels: the pipeline says so instead of writing a silent black image.
final class OverflowWarningTests: XCTestCase {
    func testWarnsOnNonFiniteImageOrLatents() {
        let fine = Tensor(shape: [1, 3, 2, 2], scalars: [Float](repeating: 0.5, count: 12))
        var broken = fine
        broken.scalars[5] = .infinity
        XCTAssertNil(StableDiffusionPipeline.overflowWarning(latents: fine, image: fine, device: .cuda))
        let image = StableDiffusionPipeline.overflowWarning(latents: fine, image: broken, device: .cuda)
        XCTAssertTrue(image?.contains("decoded image") == true && image?.contains("--precision bf16") == true, image ?? "nil")
        var nanLatents = fine
        nanLatents.scalars[0] = .nan
        let latents = StableDiffusionPipeline.overflowWarning(latents: nanLatents, image: fine, device: .cpu)
        XCTAssertTrue(latents?.contains("latents") == true && latents?.contains("bf16") == false, latents ?? "nil")
    }
}

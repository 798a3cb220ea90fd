import XCTest
@testable import Diffuse8

/// Every CUDA kernel source compiles with NVRTC for the architectures it runs on, in FP16 and BF16 storage. This
/// needs NVRTC but no GPU (`pip install nvidia-cuda-nvrtc`, then point `DIFFUSE8_CUDA_LIBRARY_PATH` at its `lib`
/// folder); without NVRTC the test is skipped. The GPU tests run the kernels.
final class CUDAKernelSourceTests: XCTestCase {
    private func nvrtc() throws -> NVRTCAPI {
        do { return try CUDAKernelCompiler.loadNVRTC() } catch { throw XCTSkip("NVRTC not found: \(error)") }
    }

    private func assertCompiles(_ module: String, _ source: String, architectures: [String], with nvrtc: NVRTCAPI,
                                file: StaticString = #filePath, line: UInt = #line) {
        for architecture in architectures {
            for storage in ["", "#define D8_BF16\n"] {
                do {
                    let cubin = try CUDAKernelCompiler.compile(module, source: storage + source,
                                                               options: CUDAKernelCompiler.options(architecture: architecture), nvrtc: nvrtc)
                    XCTAssertGreaterThan(cubin.count, 0, "\(module) \(architecture): empty cubin", file: file, line: line)
                } catch {
                    XCTFail("\(module) for \(architecture)\(storage.isEmpty ? "" : ", BF16"): \(error)", file: file, line: line)
                }
            }
        }
    }

    /// The modules every architecture compiles (the Hopper-only ones are made per variant below).
    private static let portableModules = [
        ("diffuse8_basic", CUDAKernelSources.basic), ("diffuse8_eight_bit", CUDAKernels.eightBitSource),
        ("diffuse8_fused", CUDAKernels.fusedSource), ("diffuse8_gemm_attention", CUDAKernels.gemmAttentionSource),
        ("diffuse8_model_ops", CUDAKernels.modelOpsSource), ("diffuse8_short_attention", CUDAKernels.shortAttentionSource),
        ("diffuse8_attention", CUDAAttentionSource.source), ("diffuse8_sampler", CUDASamplingLoop.source),
        ("diffuse8_direct_convolution", CUDAKernels.directConvolutionSource)]

    func testEveryKernelModuleCompilesForAmpereAdaAndHopper() throws {
        let nvrtc = try nvrtc()
        for (module, source) in Self.portableModules {
            assertCompiles(module, source, architectures: ["sm_80", "sm_89", "sm_90"], with: nvrtc)
        }
    }

    /// The wgmma GEMM uses Hopper-only instructions (wgmma, TMA, setmaxnreg): sm_90a, each tile variant, INT8 and FP8,
    /// the variants with GEGLU or level 4's FP8 rounding in the epilogue, and the implicit-GEMM convolution per tile width;
    /// for FP8, each also with FP32 totals (deep sums) where the variant runs them.
    func testWarpSpecializedGEMMCompilesForHopper() throws {
        let nvrtc = try nvrtc()
        for variant in CUDAKernels.WarpSpecializedGEMM.variants {
            for format in [QuantizedFormat.int8, .fp8] {
                // a depth without FP32 totals, and for FP8 one with them (where the variant runs it)
                for depth in [1280, 2880] where CUDAKernels.WarpSpecializedGEMM.variants(format, depth: depth).contains(variant)
                    && (depth == 1280 || CUDAKernels.WarpSpecializedGEMM.promotesSums(format, depth: depth)) {
                    let promotes = CUDAKernels.WarpSpecializedGEMM.promotesSums(format, depth: depth)
                    let name = "diffuse8_ws_gemm \(variant) \(format)\(promotes ? ", FP32 totals" : "")"
                    assertCompiles(name, CUDAKernels.warpSpecializedSource(variant, format: format, promotes: promotes),
                                   architectures: ["sm_90a"], with: nvrtc)
                    assertCompiles(name + " FP8-rounded", CUDAKernels.warpSpecializedSource(variant, format: format, rounding: true, promotes: promotes),
                                   architectures: ["sm_90a"], with: nvrtc)
                    assertCompiles(name + " codes out", CUDAKernels.warpSpecializedSource(variant, format: format, codesOut: true, promotes: promotes),
                                   architectures: ["sm_90a"], with: nvrtc)
                    for tileWidth in [8, 16, 32, 64] {
                        assertCompiles(name + " convolution, tiles \(tileWidth) wide",
                                       CUDAKernels.warpSpecializedSource(variant, format: format, convolutionTileWidth: tileWidth, promotes: promotes),
                                       architectures: ["sm_90a"], with: nvrtc)
                    }
                    guard CUDAKernels.WarpSpecializedGEMM.gegluVariants(format, depth: depth).contains(variant) else { continue }
                    assertCompiles(name + " GEGLU", CUDAKernels.warpSpecializedSource(variant, format: format, geglu: true, promotes: promotes),
                                   architectures: ["sm_90a"], with: nvrtc)
                    assertCompiles(name + " GEGLU, codes out",
                                   CUDAKernels.warpSpecializedSource(variant, format: format, geglu: true, codesOut: true, promotes: promotes),
                                   architectures: ["sm_90a"], with: nvrtc)
                }
            }
        }
    }

    /// Kernels are launched so that each may start before the previous one ends (`overlapsLaunches`): one that read
    /// or wrote memory before `D8_AFTER_PREVIOUS_KERNEL()` could see its predecessor's inputs half written. Every
    /// kernel of every module must call it once, at its start (the wgmma GEMM after setting up its barriers).
    func testEveryKernelWaitsForThePreviousKernel() {
        let variant = CUDAKernels.WarpSpecializedGEMM.variants[0]
        let modules = Self.portableModules + [
            ("diffuse8_fp8_attention_wgmma", CUDAKernels.wgmmaFP8AttentionSource),
            ("diffuse8_ws_gemm", CUDAKernels.warpSpecializedSource(variant, format: .fp8, promotes: false)),
            ("diffuse8_ws_gemm convolution", CUDAKernels.warpSpecializedSource(variant, format: .int8, convolutionTileWidth: 16, promotes: false))]
        var kernels = 0
        for (module, source) in modules {
            // each kernel's text runs from its `__global__` to the next one's
            for kernel in source.components(separatedBy: "__global__").dropFirst() {
                let name = kernel.split(separator: "(")[0].split(separator: " ").last.map(String.init) ?? "?"
                XCTAssertEqual(kernel.components(separatedBy: "D8_AFTER_PREVIOUS_KERNEL();").count, 2,
                               "\(module): kernel \(name) must call D8_AFTER_PREVIOUS_KERNEL() once")
                kernels += 1
            }
        }
        XCTAssertGreaterThan(kernels, 40)
    }

    /// Our FP8 attention for Hopper (wgmma, sm_90a).
    func testWGMMAFP8AttentionCompilesForHopper() throws {
        assertCompiles("diffuse8_fp8_attention_wgmma", CUDAKernels.wgmmaFP8AttentionSource, architectures: ["sm_90a"], with: try nvrtc())
    }
}

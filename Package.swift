// swift-tools-version:6.0
import Foundation
import PackageDescription

/// Release flags of the library. `-O`, not `-Ounchecked`: bounds and overflow checks stay on, so a value that
/// slipped past the input checks stops the process instead of corrupting memory (costs ~10 % CPU time on the
/// CPU UNet, docs/PERFORMANCE.md). On x86-64 hosts, release builds target Haswell-class CPUs (AVX2 + FMA, every
/// x86 server CPU since 2013) so the GEMM micro-kernel runs on 256-bit FMA units (~3× the SSE2 build);
/// `DIFFUSE8_PORTABLE=1 swift build -c release` builds for any x86-64 instead.
var releaseFlags = ["-O"]
#if arch(x86_64)
if ProcessInfo.processInfo.environment["DIFFUSE8_PORTABLE"] == nil {
    releaseFlags += ["-target-cpu", "haswell", "-DDIFFUSE8_FMA"]
}
#endif

let package = Package(
    name: "Diffuse8",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Diffuse8", targets: ["Diffuse8"]),
        .library(name: "Diffuse8PNG", targets: ["Diffuse8PNG"]),
        .library(name: "Diffuse8Server", targets: ["Diffuse8Server"]),
        .library(name: "Diffuse8ONNX", targets: ["Diffuse8ONNX"]),
        .executable(name: "diffuse8", targets: ["Diffuse8CLI"]),
        .executable(name: "diffuse8-cuda-selftest", targets: ["Diffuse8CUDASelfTest"]),
        .executable(name: "diffuse8-fuzz", targets: ["Diffuse8Fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // Formats, models, schedulers, backends and the pipeline. No external dependencies.
        .target(
            name: "Diffuse8",
            dependencies: ["CDiffuse8Kernels"],
            swiftSettings: [
                .unsafeFlags(releaseFlags, .when(configuration: .release)),
                // The SIMD kernels are ~50× slower unoptimised; tests run whole pipelines, so debug builds
                // optimise this target too (it stays testable: SwiftPM adds -enable-testing in debug).
                .unsafeFlags(["-O"], .when(configuration: .debug)),
            ]
        ),
        // The INT8 GEMM micro-kernels (x86 AVX-512 VNNI / AVX2, arm64 dot product, portable), picked at run time.
        // C only because Swift has no intrinsics for these instructions; optimised in debug builds too.
        .target(
            name: "CDiffuse8Kernels",
            cSettings: [.unsafeFlags(["-O2"])]
        ),
        // PNG encoding (deflate through compress-nio) with A1111-style text chunks.
        .target(
            name: "Diffuse8PNG",
            dependencies: ["Diffuse8", .product(name: "CompressNIO", package: "compress-nio")]
        ),
        // The AUTOMATIC1111-compatible HTTP server (`diffuse8 serve`): job queue, /sdapi/v1 routes, web page.
        .target(
            name: "Diffuse8Server",
            dependencies: [
                "Diffuse8", "Diffuse8PNG",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // ONNX export (`diffuse8 export-onnx`): the UNet recorded as an ONNX graph, plain or with Q/DQ nodes.
        // onnx.pb.swift is generated from ONNX's onnx.proto by tools/onnx/regenerate_protobuf.sh.
        .target(
            name: "Diffuse8ONNX",
            dependencies: ["Diffuse8", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        .executableTarget(
            name: "Diffuse8CLI",
            dependencies: [
                "Diffuse8", "Diffuse8PNG", "Diffuse8Server", "Diffuse8Checks", "Diffuse8ONNX",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Checks and benchmarks of the engine: CUDA kernel/model checks against the CPU, UNet and kernel benchmarks.
        .target(
            name: "Diffuse8Checks",
            dependencies: ["Diffuse8"],
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        // The GPU tests as a stand-alone binary (no argument parser): `diffuse8-cuda-selftest --help`.
        .executableTarget(name: "Diffuse8CUDASelfTest", dependencies: ["Diffuse8", "Diffuse8Checks"]),
        // libFuzzer targets for the file readers; a stub unless built by tools/fuzz.sh (-DDIFFUSE8_FUZZ).
        .executableTarget(name: "Diffuse8Fuzz", dependencies: ["Diffuse8", "Diffuse8PNG"]),
        .testTarget(
            name: "Diffuse8Tests",
            dependencies: ["Diffuse8", "Diffuse8PNG", "Diffuse8Server", "Diffuse8Checks", "Diffuse8ONNX"],
            exclude: []
        ),
    ],
    swiftLanguageModes: [.v5]
)

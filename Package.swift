// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Diffuse8",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "Diffuse8", targets: ["Diffuse8"]),
        .library(name: "Diffuse8PNG", targets: ["Diffuse8PNG"]),
        .executable(name: "diffuse8", targets: ["Diffuse8CLI"]),
        .executable(name: "diffuse8-cuda-selftest", targets: ["Diffuse8CUDASelfTest"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
    ],
    targets: [
        // Formats, models, schedulers, backends and the pipeline. No external dependencies.
        .target(
            name: "Diffuse8",
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),
        // PNG encoding (deflate through compress-nio) with A1111-style text chunks.
        .target(
            name: "Diffuse8PNG",
            dependencies: ["Diffuse8", .product(name: "CompressNIO", package: "compress-nio")]
        ),
        .executableTarget(
            name: "Diffuse8CLI",
            dependencies: [
                "Diffuse8", "Diffuse8PNG",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The GPU tests as a stand-alone binary (no argument parser): `diffuse8-cuda-selftest --help`.
        .executableTarget(name: "Diffuse8CUDASelfTest", dependencies: ["Diffuse8"]),
        .testTarget(
            name: "Diffuse8Tests",
            dependencies: ["Diffuse8", "Diffuse8PNG"],
            exclude: []
        ),
    ],
    swiftLanguageModes: [.v5]
)

// swift-tools-version:6.0
// A stand-alone runner for Diffuse8's benchmark harness (Sources/Diffuse8/Benchmark), until the
// `diffuse8 bench` command exists. Build from this folder; see README.md.
import PackageDescription

let package = Package(
    name: "d8bench",
    dependencies: [.package(name: "Diffuse8", path: "..")],
    targets: [
        .executableTarget(name: "d8bench", dependencies: [.product(name: "Diffuse8", package: "Diffuse8")]),
    ],
    swiftLanguageModes: [.v5]
)

import Diffuse8

/// d8bench kernels [--quick] [--threads N]
/// d8bench unet <unet folder> [--batch 2] [--latent 64] [--warmup 1] [--iterations 5] [--threads N]
let arguments = Array(CommandLine.arguments.dropFirst())

func value(_ flag: String) -> Int? {
    guard let i = arguments.firstIndex(of: flag), i + 1 < arguments.count else { return nil }
    return Int(arguments[i + 1])
}

if let threads = value("--threads") { CPUConfiguration.threadCount = threads }
switch arguments.first {
case "kernels":
    for entry in KernelBenchmark.run(iterations: value("--iterations") ?? 5, quick: arguments.contains("--quick")) {
        let rate = entry.flops > 0 ? String(Int(entry.gflopsPerSecond)) + " GFLOP/s" : ""
        print(entry.result.description, rate)
    }
case "unet" where arguments.count >= 2:
    let benchmark = try UNetBenchmark(directory: arguments[1])
    let options = UNetBenchmark.Options(batch: value("--batch") ?? 2, latentSize: value("--latent"),
                                        warmup: value("--warmup") ?? 1, iterations: value("--iterations") ?? 5)
    let report = benchmark.run(options)
    print(report.json)
default:
    print("usage: d8bench kernels [--quick] [--iterations N] [--threads N]\n"
        + "       d8bench unet <unet folder> [--batch 2] [--latent N] [--warmup 1] [--iterations 5] [--threads N]")
}

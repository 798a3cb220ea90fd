import XCTest
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
@testable import Diffuse8

/// Compares the schedulers with diffusers 0.42.1 runs recorded by `tools/reference/schedulers.py`: timesteps and
/// sigmas (≤ 1e-6 relative), init_noise_sigma, and a whole denoising loop per case (scale_model_input and step
/// outputs ≤ 1e-5 relative L2), Euler ancestral and DDIM eta>0 drawing noise from the same torch generator.
final class SchedulerTests: XCTestCase {
    struct Case: Decodable {
        let name: String
        let `class`: String
        let config_path: String
        let overrides: [String: JSONValue]
        let steps: [Int]
        let eta: Float
        let seed: UInt64
    }
    struct Cases: Decodable { let shape: [Int]; let cases: [Case] }

    static let cases: Cases = {
        let data = FileManager.default.contents(atPath: Fixtures.path("reference/schedulers.json"))!
        return try! JSONDecoder().decode(Cases.self, from: data)
    }()

    static func config(_ path: String, overrides: [String: JSONValue] = [:]) throws -> JSONValue {
        let data = try XCTUnwrap(FileManager.default.contents(atPath: Fixtures.path(path)))
        var object = try XCTUnwrap(try JSONDecoder().decode(JSONValue.self, from: data).object)
        for (key, value) in overrides { object[key] = value }
        return .object(object)
    }

    private func build(_ testCase: Case, steps: Int) throws -> (any Scheduler, [Float]?) {
        let config = try Self.config(testCase.config_path, overrides: testCase.overrides)
        switch testCase.class {
        case "EulerDiscreteScheduler":
            let s = try EulerDiscreteScheduler(config: config, steps: steps); return (s, s.sigmas)
        case "EulerAncestralDiscreteScheduler":
            let s = try EulerAncestralDiscreteScheduler(config: config, steps: steps); return (s, s.sigmas)
        case "DDIMScheduler":
            return (try DDIMScheduler(config: config, steps: steps, eta: testCase.eta), nil)
        case "DPMSolverMultistepScheduler":
            let s = try DPMSolverMultistepScheduler(config: config, steps: steps); return (s, s.sigmas)
        default:
            throw SchedulerError("unknown class \(testCase.class)")
        }
    }

    private func assertClose(_ actual: [Float], _ expected: [Float], tolerance: Float, _ label: String) {
        XCTAssertEqual(actual.count, expected.count, "\(label): count")
        for (i, (a, e)) in zip(actual, expected).enumerated() where abs(a - e) > tolerance * max(abs(e), 1e-3) {
            XCTFail("\(label)[\(i)]: \(a) vs \(e)")
            return
        }
    }

    func testAgainstDiffusers() throws {
        let reference = try Fixtures.reference("schedulers")
        let outputs = try reference.tensor(named: "model_outputs")
        let shape = Self.cases.shape
        let perOutput = shape.reduce(1, *)
        let modelOutputs = (0..<4).map { Tensor(shape: shape, scalars: Array(outputs.scalars[($0 * perOutput)..<(($0 + 1) * perOutput)])) }
        var checkedSteps = 0
        var worst = 0.0
        for testCase in Self.cases.cases {
            for steps in testCase.steps {
                let label = "\(testCase.name)/\(steps)"
                let prefix = label + "/"
                var (scheduler, sigmas) = try build(testCase, steps: steps)
                assertClose(scheduler.timesteps.map { Float($0) }, try reference.tensor(named: prefix + "timesteps").scalars,
                            tolerance: 1e-6, label + " timesteps")
                if let sigmas {
                    assertClose(sigmas, try reference.tensor(named: prefix + "sigmas").scalars, tolerance: 1e-6, label + " sigmas")
                }
                assertClose([scheduler.initNoiseSigma], try reference.tensor(named: prefix + "init_noise_sigma").scalars,
                            tolerance: 1e-6, label + " init_noise_sigma")

                var generator = TorchGenerator(seed: testCase.seed)
                let initNoiseSigma = scheduler.initNoiseSigma
                var sample = Elementwise.map(generator.randn(shape)) { $0 * initNoiseSigma }
                XCTAssertLessThanOrEqual(sample.relativeL2(to: try reference.tensor(named: prefix + "sample0")), 1e-6, label + " sample0")
                let scaled = reference.contains(prefix + "scaled") ? try reference.tensor(named: prefix + "scaled") : nil
                let previous = try reference.tensor(named: prefix + "prev")
                XCTAssertEqual(previous.count, scheduler.timesteps.count * perOutput, label + " step count")
                for i in 0..<scheduler.timesteps.count {
                    let input = scheduler.scaleModelInput(sample, stepIndex: i)
                    if let scaled {
                        let expected = Tensor(shape: shape, scalars: Array(scaled.scalars[(i * perOutput)..<((i + 1) * perOutput)]))
                        XCTAssertLessThanOrEqual(input.relativeL2(to: expected), 1e-5, "\(label) scale_model_input[\(i)]")
                    }
                    sample = scheduler.step(modelOutput: modelOutputs[i % 4], stepIndex: i, sample: sample, generator: &generator)
                    let expected = Tensor(shape: shape, scalars: Array(previous.scalars[(i * perOutput)..<((i + 1) * perOutput)]))
                    let error = sample.relativeL2(to: expected)
                    XCTAssertLessThanOrEqual(error, 1e-5, "\(label) step[\(i)]")
                    if error > 1e-5 { break }
                    checkedSteps += 1
                    worst = max(worst, error)
                }
            }
        }
        XCTAssertGreaterThan(checkedSteps, 1000)
        print("SchedulerTests: \(checkedSteps) steps checked, worst step relative L2 \(worst)")
    }

    /// The coefficient form of every step (what the GPU sampling loop applies) reproduces diffusers' loop too: same
    /// cases, same model outputs, noise drawn in advance from the same generator.
    func testSamplerStepCoefficientsMatchDiffusers() throws {
        let reference = try Fixtures.reference("schedulers")
        let outputs = try reference.tensor(named: "model_outputs")
        let shape = Self.cases.shape
        let perOutput = shape.reduce(1, *)
        let modelOutputs = (0..<4).map { Tensor(shape: shape, scalars: Array(outputs.scalars[($0 * perOutput)..<(($0 + 1) * perOutput)])) }
        var checkedSteps = 0, linearRuns = 0, hostOnlyRuns = 0
        for testCase in Self.cases.cases {
            for steps in testCase.steps {
                let label = "\(testCase.name)/\(steps) coefficients", prefix = "\(testCase.name)/\(steps)/"
                let (scheduler, _) = try build(testCase, steps: steps)
                guard let plan = scheduler.samplerSteps() else { hostOnlyRuns += 1; continue }
                linearRuns += 1
                XCTAssertEqual(plan.count, scheduler.timesteps.count, label)
                var generator = TorchGenerator(seed: testCase.seed)
                var sample = Elementwise.map(generator.randn(shape)) { $0 * scheduler.initNoiseSigma }
                let scaled = reference.contains(prefix + "scaled") ? try reference.tensor(named: prefix + "scaled") : nil
                let previous = try reference.tensor(named: prefix + "prev")
                var previousOriginal: Tensor?
                for (i, step) in plan.enumerated() {
                    if let scaled {
                        let expected = Tensor(shape: shape, scalars: Array(scaled.scalars[(i * perOutput)..<((i + 1) * perOutput)]))
                        XCTAssertLessThanOrEqual(Elementwise.map(sample) { $0 / step.inputDivisor }.relativeL2(to: expected), 1e-5,
                                                 "\(label) input[\(i)]")
                    }
                    let noise = step.noiseScale != 0 ? generator.randn(shape) : nil
                    let result = step.apply(sample: sample, output: modelOutputs[i % 4], previousOriginal: previousOriginal, noise: noise)
                    (sample, previousOriginal) = (result.next, result.original)
                    let expected = Tensor(shape: shape, scalars: Array(previous.scalars[(i * perOutput)..<((i + 1) * perOutput)]))
                    let error = sample.relativeL2(to: expected)
                    XCTAssertLessThanOrEqual(error, 1e-5, "\(label) step[\(i)]")
                    if error > 1e-5 { break }
                    checkedSteps += 1
                }
            }
        }
        XCTAssertGreaterThan(checkedSteps, 500)
        XCTAssertGreaterThan(linearRuns, 10)
        print("SamplerStep coefficients: \(checkedSteps) steps of \(linearRuns) runs checked; \(hostOnlyRuns) runs without a coefficient form")
    }

    func testFactoryKindsAndNames() throws {
        let sd15 = try Self.config("tiny-sd15/scheduler/scheduler_config.json")
        let expected: [(SchedulerKind, String, String)] = [
            (.euler, "euler", "Euler"), (.eulerAncestral, "euler-a", "Euler a"), (.ddim, "ddim", "DDIM"),
            (.dpmpp2m, "dpm++2m", "DPM++ 2M"), (.dpmpp2mKarras, "dpm++2m-karras", "DPM++ 2M Karras"),
        ]
        for (kind, raw, name) in expected {
            XCTAssertEqual(kind.rawValue, raw)
            XCTAssertEqual(kind.samplerName, name)
            XCTAssertEqual(SchedulerKind(argument: raw), kind)
            XCTAssertEqual(SchedulerKind(argument: name.uppercased()), kind)
            let scheduler = try Diffuse8.makeScheduler(kind: kind, config: sd15, steps: 30)
            XCTAssertEqual(scheduler.timesteps.count, 30)
            XCTAssertEqual(try kind.makeScheduler(config: sd15, steps: 30).timesteps, scheduler.timesteps)
        }
        // The Karras kind equals DPMSolverMultistepScheduler.from_config(config, use_karras_sigmas=True).
        let reference = try Fixtures.reference("schedulers")
        let karras = try Diffuse8.makeScheduler(kind: .dpmpp2mKarras, config: sd15, steps: 30)
        XCTAssertEqual(karras.timesteps.map { Float($0) },
                       try reference.tensor(named: "sd15-DPMSolverMultistepScheduler-karras/30/timesteps").scalars)
        let plain = try Diffuse8.makeScheduler(kind: .dpmpp2m, config: Self.config("tiny-sd15/scheduler/scheduler_config.json",
                                                                           overrides: ["use_karras_sigmas": .bool(true)]), steps: 30)
        XCTAssertEqual(plain.timesteps.map { Float($0) },
                       try reference.tensor(named: "sd15-DPMSolverMultistepScheduler/30/timesteps").scalars)
        XCTAssertNil(SchedulerKind(argument: "pndm"))
    }

    func testUnsupportedConfigurationsNameTheKey() throws {
        let cases: [(SchedulerKind, String, JSONValue)] = [
            (.euler, "beta_schedule", .string("squaredcos_cap_v2")),
            (.euler, "trained_betas", .array([.number(0.1)])),
            (.ddim, "prediction_type", .string("flow_prediction")),
            (.eulerAncestral, "prediction_type", .string("sample")),
            (.euler, "timestep_spacing", .string("karras")),
            (.ddim, "rescale_betas_zero_snr", .bool(true)),
            (.ddim, "thresholding", .bool(true)),
            (.dpmpp2m, "use_lu_lambdas", .bool(true)),
            (.dpmpp2m, "final_sigmas_type", .string("denoise_to_zero")),
            (.euler, "use_exponential_sigmas", .bool(true)),
        ]
        for (kind, key, value) in cases {
            let config = try Self.config("tiny-sdxl/scheduler/scheduler_config.json", overrides: [key: value])
            XCTAssertThrowsError(try Diffuse8.makeScheduler(kind: kind, config: config, steps: 10), "\(kind) \(key)") { error in
                XCTAssertTrue("\(error)".contains(key), "\(error)")
            }
        }
        // Keys of other classes are ignored, as from_config ignores them (the PNDM config has skip_prk_steps).
        XCTAssertNoThrow(try Diffuse8.makeScheduler(kind: .eulerAncestral, config: Self.config(
            "tiny-sd15/scheduler/scheduler_config.json", overrides: ["use_karras_sigmas": .bool(true)]), steps: 5))
    }
}

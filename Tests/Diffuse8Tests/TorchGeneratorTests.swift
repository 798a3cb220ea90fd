import XCTest
@testable import Diffuse8

/// Compares `TorchGenerator` with `torch.Generator("cpu").manual_seed(s)` + `torch.randn` recorded by
/// `tools/reference/rng.py` (float32, exact to the bit).
final class TorchGeneratorTests: XCTestCase {
    static let seeds: [UInt64] = [0, 42, (1 << 32) + 5, (1 << 63) + 12345]
    static let shapes: [[Int]] = [[1], [7], [15], [16], [17], [100], [2, 4, 8, 8]]

    private func assertBitExact(_ actual: [Float], _ expected: [Float], _ label: String,
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, label, file: file, line: line)
        var mismatches = 0
        for (i, (a, e)) in zip(actual, expected).enumerated() where a.bitPattern != e.bitPattern {
            if mismatches < 5 { XCTFail("\(label)[\(i)]: \(a) != \(e)", file: file, line: line) }
            mismatches += 1
        }
        if mismatches > 0 { XCTFail("\(label): \(mismatches) of \(expected.count) values differ", file: file, line: line) }
    }

    func testSingleDrawsMatchTorch() throws {
        let reference = try Fixtures.reference("rng")
        for (si, seed) in Self.seeds.enumerated() {
            for shape in Self.shapes {
                var generator = TorchGenerator(seed: seed)
                let name = "seed\(si)_" + shape.map(String.init).joined(separator: "x")
                let drawn = generator.randn(shape)
                XCTAssertEqual(drawn.shape, shape)
                assertBitExact(drawn.scalars, try reference.tensor(named: name).scalars, name)
            }
        }
    }

    func testSDXLLatentHeadAndTail() throws {
        let reference = try Fixtures.reference("rng")
        for (si, seed) in Self.seeds.enumerated() {
            var generator = TorchGenerator(seed: seed)
            let latent = generator.randn([1, 4, 128, 128]).scalars
            assertBitExact(Array(latent.prefix(64)), try reference.tensor(named: "seed\(si)_1x4x128x128_head").scalars, "head \(si)")
            assertBitExact(Array(latent.suffix(64)), try reference.tensor(named: "seed\(si)_1x4x128x128_tail").scalars, "tail \(si)")
        }
    }

    /// Successive draws continue one stream, including the scalar path's cached second sample.
    func testSuccessiveDrawsContinueTheStream() throws {
        let reference = try Fixtures.reference("rng")
        let shapes: [[Int]] = [[2, 4, 8, 8], [2, 4, 8, 8], [3], [5], [17], [1]]
        for (si, seed) in Self.seeds.enumerated() {
            var generator = TorchGenerator(seed: seed)
            for (k, shape) in shapes.enumerated() {
                let name = "seed\(si)_seq\(k)"
                assertBitExact(generator.randn(shape).scalars, try reference.tensor(named: name).scalars, name)
            }
        }
    }

    /// torch's DEFAULT-capability kernel (libm logf/cosf/sinf), recorded with ATEN_CPU_CAPABILITY=default.
    func testLibmPathMatchesTorchDefaultCapability() throws {
        #if os(Linux)
        let reference = try Fixtures.reference("rng_libm")
        for (si, seed) in Self.seeds.prefix(2).enumerated() {
            for shape in [[16], [17], [100], [2, 4, 8, 8]] {
                var generator = TorchGenerator(seed: seed, normalPath: .libm)
                let name = "seed\(si)_" + shape.map(String.init).joined(separator: "x")
                assertBitExact(generator.randn(shape).scalars, try reference.tensor(named: name).scalars, name)
            }
        }
        #endif
    }

    func testSeedUsesLow32BitsLikeTorch() {
        var a = TorchGenerator(seed: 5), b = TorchGenerator(seed: (1 << 32) + 5)
        XCTAssertEqual(a.randn([20]).scalars, b.randn([20]).scalars)
        XCTAssertEqual(b.initialSeed, (1 << 32) + 5)
    }
}

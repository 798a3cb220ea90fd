import ArgumentParser
import Diffuse8

/// Range checks shared by the commands' options, with messages that give the allowed range.
enum OptionLimits {
    static let maximumThreads = 1024
    static let maximumImages = 10_000
    /// A1111 allows clip skip up to 12 (the layers of CLIP ViT-L).
    static let maximumClipSkip = 12

    /// `--threads N` in 1...1024 (nil: all cores).
    static func apply(threads: Int?) throws {
        guard let threads else { return }
        guard (1...maximumThreads).contains(threads) else {
            throw ValidationError("--threads \(threads) is outside 1...\(maximumThreads)")
        }
        CPUConfiguration.threadCount = threads
    }

    /// `--steps`-like counts in 1...`ModelLimits.maximumSteps`.
    static func steps(_ value: Int, _ option: String = "--steps") throws {
        guard (1...ModelLimits.maximumSteps).contains(value) else {
            throw ValidationError("\(option) \(value) is outside 1...\(ModelLimits.maximumSteps)")
        }
    }

    /// A finite `--cfg`.
    static func guidance(_ value: Float) throws {
        guard value.isFinite, abs(value) <= 1000 else { throw ValidationError("--cfg \(value) must be a finite number in [-1000, 1000]") }
    }

    /// `count` images with seeds seed, seed+1, …: the count in 1...10000 and the last seed within UInt64.
    static func seeds(_ seed: UInt64, count: Int, _ option: String) throws {
        guard (1...maximumImages).contains(count) else {
            throw ValidationError("\(option) \(count) is outside 1...\(maximumImages)")
        }
        guard seed <= UInt64.max - UInt64(count - 1) else {
            throw ValidationError("--seed \(seed) with \(option) \(count) passes the largest seed \(UInt64.max); use --seed ≤ \(UInt64.max - UInt64(count - 1))")
        }
    }

    /// `--width`/`--height`: a positive multiple of 8 up to the image-size limit.
    static func side(_ value: Int?, _ option: String) throws {
        guard let value else { return }
        guard value > 0, value % 8 == 0 else { throw ValidationError("\(option) \(value) is not a positive multiple of 8") }
        guard value <= ModelLimits.maximumImageSide else {
            throw ValidationError("\(option) \(value) is above the \(ModelLimits.maximumImageSide)-pixel limit")
        }
    }
}

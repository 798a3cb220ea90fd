#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The tuning choices of earlier runs on one card, as a small text file next to the kernel cache
/// (`CUDAKernelCompiler.cacheDirectory()`), so that a new process does not time again every kernel, plan and path
/// choice (`CUDATuningTable`) it already measured.
///
/// File `tuning-<hash>.txt`, where the hash (FNV-1a) covers `identity`: the card (name, compute capability, SM count),
/// the driver, cuBLASLt and cuDNN versions, a hash of our competing kernels' sources, and `formatVersion`. Contents:
///
///     diffuse8 tuning 1
///     card <identity>
///     <key>\t<choice>
///     …
///
/// A file whose header or identity differs from this process's is ignored, as are lines without a tab; a choice
/// that no longer decodes (a kernel variant that is gone) is ignored by its user. The file is written to a temporary
/// name and renamed; an unwritable folder means no record. `DIFFUSE8_CUDA_TUNING_CACHE=off` turns it off.
package struct CUDATuningRecord: Equatable, Sendable {
    /// Bumped whenever a key's or a choice's meaning, or the set of candidates, changes.
    package static let formatVersion = 1
    static let header = "diffuse8 tuning \(formatVersion)"

    /// The card and libraries the choices were measured with.
    package var identity: String
    /// Choice per problem key.
    package var entries: [String: String]

    package init(identity: String, entries: [String: String] = [:]) {
        self.identity = identity
        self.entries = entries
    }

    /// The identity of a card, its libraries and our competing kernels (`kernelFingerprint`); tabs and line breaks
    /// become spaces.
    package static func identity(deviceName: String, computeCapability: (major: Int, minor: Int), multiprocessors: Int,
                                 driverVersion: Int, cuBLASLtVersion: Int?, cuDNNVersion: Int?, kernels: String) -> String {
        sanitized("\(deviceName) | sm_\(computeCapability.major)\(computeCapability.minor) | \(multiprocessors) SMs | driver \(driverVersion)"
            + " | cuBLASLt \(cuBLASLtVersion.map(String.init) ?? "none") | cuDNN \(cuDNNVersion.map(String.init) ?? "none")"
            + " | kernels \(kernels) | format \(formatVersion)")
    }

    /// A hash (FNV-1a) of the sources of our kernels that compete in tuning — the 8-bit GEMM variants (plain or with
    /// GEGLU, in 16 bit or codes, and as a convolution; with and without FP32 totals), the quantize, dequantize and
    /// GEGLU kernels, attention, the direct convolutions: a change to any of them makes earlier measurements stale.
    static var kernelFingerprint: String {
        let gemms = [QuantizedFormat.int8, .fp8].flatMap { format in
            CUDAKernels.WarpSpecializedGEMM.variants.flatMap { variant in
                [false, true].flatMap { promotes in
                    [CUDAKernels.warpSpecializedSource(variant, format: format, promotes: promotes),
                     CUDAKernels.warpSpecializedSource(variant, format: format, geglu: true, promotes: promotes),
                     CUDAKernels.warpSpecializedSource(variant, format: format, geglu: true, codesOut: true, promotes: promotes),
                     CUDAKernels.warpSpecializedSource(variant, format: format, codesOut: true, promotes: promotes),
                     CUDAKernels.warpSpecializedSource(variant, format: format, convolutionTileWidth: 64, promotes: promotes)]
                }
            }
        }
        let sources = gemms + [CUDAKernels.eightBitSource, CUDAKernels.fusedSource, CUDAAttentionSource.source,
                                CUDAKernels.directConvolutionSource]
        return String(CUDAKernelCompiler.fnv1a(sources.joined(separator: "\u{0}")), radix: 16)
    }

    /// The file's text. Entries whose key or choice holds a tab or a line break, or whose key is empty, are left out.
    package func encoded() -> String {
        var text = Self.header + "\n" + "card " + Self.sanitized(identity) + "\n"
        for (key, choice) in entries.sorted(by: { $0.key < $1.key }) where Self.isStorable(key) && Self.isStorable(choice) && !key.isEmpty {
            text += key + "\t" + choice + "\n"
        }
        return text
    }

    /// The record in `text` when it was written for `identity`, else nil (another card, driver, library or format,
    /// or not a record at all). Malformed lines are skipped.
    package static func decode(_ text: String, identity: String) -> CUDATuningRecord? {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true).makeIterator()
        guard lines.next().map(String.init) == header, lines.next().map(String.init) == "card " + sanitized(identity) else { return nil }
        var record = CUDATuningRecord(identity: identity)
        while let line = lines.next() {
            guard let tab = line.firstIndex(of: "\t") else { continue }
            let key = String(line[..<tab]), choice = String(line[line.index(after: tab)...])
            guard !key.isEmpty, !choice.isEmpty, isStorable(key), isStorable(choice) else { continue }
            record.entries[key] = choice
        }
        return record
    }

    /// The record's file in `directory`.
    package static func path(in directory: String, identity: String) -> String {
        "\(directory)/tuning-\(String(CUDAKernelCompiler.fnv1a(sanitized(identity)), radix: 16)).txt"
    }

    /// The record for `identity` in `directory`, or nil when there is none or it is unreadable, foreign or not a record.
    package static func load(from directory: String, identity: String) -> CUDATuningRecord? {
        guard let bytes = CUDAKernelCompiler.readFile(path(in: directory, identity: identity)),
              let text = String(validating: bytes, as: UTF8.self) else { return nil }
        return decode(text, identity: identity)
    }

    /// Writes the record into `directory` (temporary file, then rename); failures are ignored.
    package func save(in directory: String) {
        CUDAKernelCompiler.writeFileAtomically(Self.path(in: directory, identity: identity), Array(encoded().utf8))
    }

    /// Whether the record is used: not when `DIFFUSE8_CUDA_TUNING_CACHE` is `off`, `0`, `false` or `no`.
    package static var isEnabled: Bool {
        guard let value = CUDALibraryLoader.environment("DIFFUSE8_CUDA_TUNING_CACHE") else { return true }
        return !["off", "0", "false", "no"].contains(value.lowercased())
    }

    private static func isSeparator(_ scalar: Unicode.Scalar) -> Bool { scalar == "\t" || scalar == "\n" || scalar == "\r" }

    private static func isStorable(_ text: String) -> Bool { !text.unicodeScalars.contains(where: isSeparator) }

    /// `text` with tabs and line breaks as spaces: storable as a key or a choice.
    package static func sanitized(_ text: String) -> String {
        var scalars = String.UnicodeScalarView()
        for scalar in text.unicodeScalars { scalars.append(isSeparator(scalar) ? " " : scalar) }
        return String(scalars)
    }
}

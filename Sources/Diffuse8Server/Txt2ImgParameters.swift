import Diffuse8
import Diffuse8PNG
import Foundation

/// A validated `POST /sdapi/v1/txt2img` body, with AUTOMATIC1111's field names and defaults
/// (`StableDiffusionProcessingTxt2Img`): prompt "", negative_prompt "", seed -1 (random), steps 50, cfg_scale 7,
/// sampler "Euler" (`sampler_index`'s default), scheduler "automatic", batch_size 1, n_iter 1.
/// One deviation: a missing width/height is the model's native size (A1111 says 512, SD1.5's native size).
/// Fields Diffuse8 does not implement (styles, subseeds, restore_faces, tiling, scripts, …) are ignored when left
/// at A1111's defaults; hires fix (`enable_hr: true`) is refused.
public struct Txt2ImgParameters: Sendable, Equatable {
    public var prompt = ""
    public var negativePrompt = ""
    public var steps = 50
    public var cfgScale = 7.0
    public var width: Int
    public var height: Int
    /// -1: a random seed is drawn when the job runs.
    public var seed: Int64 = -1
    public var samplerName = "Euler"
    public var scheduler: String?
    public var batchSize = 1
    public var nIter = 1
    public var sendImages = true
    /// `override_settings.CLIP_stop_at_last_layers` (A1111's "Clip skip"), 1 = the last layer.
    public var clipSkip = 1
    /// `/img2img`: the first of `init_images` (base64 PNG), resized to width × height (A1111's resize mode 0,
    /// "Just resize"; bilinear here), and `denoising_strength` (default 0.75).
    public var initImage: PixelImage?
    public var denoisingStrength = 0.75
    /// The sampler `samplerName` and `scheduler` resolve to.
    public var kind: SchedulerKind = .euler

    public var imageCount: Int { batchSize * nIter }

    /// Largest seed accepted: JSON numbers are doubles, exact up to 2^53.
    public static let maxSeed: Int64 = 1 << 53

    /// Parses and checks a request body. Every problem is reported at once, A1111/FastAPI style.
    /// `imageToImage`: the body of `POST /sdapi/v1/img2img` (also `init_images`, `denoising_strength`).
    public static func parse(_ body: [UInt8], nativeSize: Int, limits: ServerLimits,
                             imageToImage: Bool = false) throws(ValidationFailure) -> Txt2ImgParameters {
        let json: JSONValue
        do {
            json = try JSONDecoder().decode(JSONValue.self, from: Data(body))
        } catch {
            throw ValidationFailure([ValidationIssue(field: nil, "JSON decode error", type: "json_invalid")])
        }
        guard let object = json.object else {
            throw ValidationFailure([ValidationIssue(field: nil, "Input should be a valid dictionary", type: "dict_type")])
        }
        var reader = FieldReader(object: object)
        var p = Txt2ImgParameters(width: nativeSize, height: nativeSize)
        p.prompt = reader.string("prompt") ?? p.prompt
        p.negativePrompt = reader.string("negative_prompt") ?? p.negativePrompt
        for (field, text) in [("prompt", p.prompt), ("negative_prompt", p.negativePrompt)] where text.count > limits.maxPromptCharacters {
            reader.fail(field, "String should have at most \(limits.maxPromptCharacters) characters", type: "string_too_long")
        }
        p.steps = reader.integer("steps", in: 1...Int64(limits.maxSteps)).map(Int.init) ?? p.steps
        p.cfgScale = reader.number("cfg_scale", in: 0...100) ?? p.cfgScale
        p.width = reader.integer("width", in: 8...Int64(limits.maxImageSide), multipleOf: 8).map(Int.init) ?? p.width
        p.height = reader.integer("height", in: 8...Int64(limits.maxImageSide), multipleOf: 8).map(Int.init) ?? p.height
        p.seed = reader.integer("seed", in: -1...maxSeed) ?? p.seed
        p.batchSize = reader.integer("batch_size", in: 1...Int64(limits.maxImagesPerRequest)).map(Int.init) ?? p.batchSize
        p.nIter = reader.integer("n_iter", in: 1...Int64(limits.maxImagesPerRequest)).map(Int.init) ?? p.nIter
        if p.imageCount > limits.maxImagesPerRequest {
            reader.fail("n_iter", "batch_size × n_iter = \(p.imageCount) images; at most \(limits.maxImagesPerRequest) per request", type: "less_than_equal")
        }
        p.sendImages = reader.bool("send_images") ?? p.sendImages
        // Emphasis syntax and long prompts are handled by the pipeline; LoRA tags need files the server does not load.
        for (field, text) in [("prompt", p.prompt), ("negative_prompt", p.negativePrompt)] where text.contains("<lora:") {
            reader.fail(field, "LoRA tags (<lora:…>) are not supported by this server; merge the LoRA with `diffuse8 generate --lora`", type: "value_error")
        }
        if imageToImage {
            p.denoisingStrength = reader.number("denoising_strength", in: 0...1) ?? p.denoisingStrength
            if Int(Float(p.steps) * Float(p.denoisingStrength)) < 1 {
                reader.fail("denoising_strength", "denoising_strength × steps leaves no denoising step", type: "value_error")
            }
            if let first = object["init_images"]?.array?.first?.string {
                let base64 = first.range(of: "base64,").map { String(first[$0.upperBound...]) } ?? first
                if let data = Data(base64Encoded: base64), let png = try? PNGDecoder.decode(Array(data)) {
                    p.initImage = ImageConversion.resized(png.image, width: p.width, height: p.height)
                } else {
                    reader.fail("init_images", "the first init image is not a base64-encoded PNG", type: "value_error")
                }
            } else {
                reader.fail("init_images", "Field required: a list with one base64-encoded PNG", type: "missing")
            }
        }
        if let skip = object["override_settings"]?["CLIP_stop_at_last_layers"], !skip.isNull {
            if let value = skip.int, (1...12).contains(value) {
                p.clipSkip = value
            } else {
                reader.fail("override_settings", "CLIP_stop_at_last_layers must be an integer in 1...12", type: "value_error")
            }
        }
        if reader.bool("enable_hr") == true {
            reader.fail("enable_hr", "hires fix is not supported by this server", type: "value_error")
        }
        let sampler = reader.string("sampler_name") ?? reader.string("sampler_index") ?? p.samplerName
        let scheduler = reader.string("scheduler")
        if reader.issues.isEmpty {
            do {
                p.kind = try SamplerCatalog.resolve(sampler: sampler, scheduler: scheduler)
                p.samplerName = sampler
                p.scheduler = scheduler
            } catch {
                reader.fail(error.field, error.message, type: "value_error")
            }
        }
        guard reader.issues.isEmpty else { throw ValidationFailure(reader.issues) }
        return p
    }
}

/// Typed access to the fields of a JSON object that collects an issue per bad field. `null` and missing fields
/// give nil (the default), as A1111's optional fields do.
struct FieldReader {
    let object: [String: JSONValue]
    var issues: [ValidationIssue] = []

    mutating func fail(_ field: String?, _ message: String, type: String) {
        issues.append(ValidationIssue(field: field, message, type: type))
    }

    private func present(_ key: String) -> JSONValue? {
        guard let value = object[key], value != .null else { return nil }
        return value
    }

    mutating func string(_ key: String) -> String? {
        guard let value = present(key) else { return nil }
        guard let text = value.string else { fail(key, "Input should be a valid string", type: "string_type"); return nil }
        return text
    }

    mutating func bool(_ key: String) -> Bool? {
        guard let value = present(key) else { return nil }
        guard let flag = value.bool else { fail(key, "Input should be a valid boolean", type: "bool_type"); return nil }
        return flag
    }

    mutating func number(_ key: String, in range: ClosedRange<Double>) -> Double? {
        guard let value = present(key) else { return nil }
        guard let number = value.double, number.isFinite else { fail(key, "Input should be a valid number", type: "float_type"); return nil }
        return check(key, number, range) ? number : nil
    }

    mutating func integer(_ key: String, in range: ClosedRange<Int64>, multipleOf step: Int64 = 1) -> Int64? {
        guard let value = present(key) else { return nil }
        guard let number = value.double, number.isFinite else { fail(key, "Input should be a valid integer", type: "int_type"); return nil }
        guard number == number.rounded() else {
            fail(key, "Input should be a valid integer, got a number with a fractional part", type: "int_from_float")
            return nil
        }
        guard check(key, number, Double(range.lowerBound)...Double(range.upperBound)) else { return nil }
        let integer = Int64(number)
        guard integer % step == 0 else {
            fail(key, "Input should be a multiple of \(step)", type: "multiple_of")
            return nil
        }
        return integer
    }

    private mutating func check(_ key: String, _ number: Double, _ range: ClosedRange<Double>) -> Bool {
        func text(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v) }
        if number < range.lowerBound {
            fail(key, "Input should be greater than or equal to \(text(range.lowerBound))", type: "greater_than_equal")
            return false
        }
        if number > range.upperBound {
            fail(key, "Input should be less than or equal to \(text(range.upperBound))", type: "less_than_equal")
            return false
        }
        return true
    }
}

/// Response bodies of the `/sdapi/v1` endpoints, field for field as AUTOMATIC1111's `modules/api/models.py`.

/// `POST /sdapi/v1/txt2img`: base64 PNGs, the request as understood, and `info` (a JSON string, as A1111).
public struct Txt2ImgResponse: Encodable, Sendable {
    public var images: [String]
    public var parameters: Txt2ImgEcho
    public var info: String
}

/// The request echoed back in `parameters` (A1111 echoes its request model).
public struct Txt2ImgEcho: Encodable, Sendable {
    var prompt: String
    var negative_prompt: String
    var styles: [String] = []
    var seed: Int64
    var subseed: Int64 = -1
    var subseed_strength: Double = 0
    var sampler_name: String
    var scheduler: String?
    var batch_size: Int
    var n_iter: Int
    var steps: Int
    var cfg_scale: Double
    var width: Int
    var height: Int
    var enable_hr = false
    var send_images: Bool
    var save_images = false

    init(_ p: Txt2ImgParameters) {
        prompt = p.prompt
        negative_prompt = p.negativePrompt
        seed = p.seed
        sampler_name = p.samplerName
        scheduler = p.scheduler
        batch_size = p.batchSize
        n_iter = p.nIter
        steps = p.steps
        cfg_scale = p.cfgScale
        width = p.width
        height = p.height
        send_images = p.sendImages
    }
}

/// The `info` JSON of a generation (A1111's `Processed.js()`).
public struct GenerationInfo: Codable, Sendable {
    public var prompt: String
    public var all_prompts: [String]
    public var negative_prompt: String
    public var all_negative_prompts: [String]
    public var seed: Int64
    public var all_seeds: [Int64]
    public var subseed: Int64
    public var all_subseeds: [Int64]
    public var subseed_strength: Double = 0
    public var width: Int
    public var height: Int
    public var sampler_name: String
    public var cfg_scale: Double
    public var steps: Int
    public var batch_size: Int
    public var restore_faces = false
    public var sd_model_name: String
    public var seed_resize_from_w = -1
    public var seed_resize_from_h = -1
    public var extra_generation_params: [String: String] = [:]
    public var index_of_first_image = 0
    public var infotexts: [String]
    public var styles: [String] = []
    public var job_timestamp: String
    public var clip_skip = 1
    public var is_using_inpainting_conditioning = false
    public var version = "Diffuse8"
    /// Whether `POST /sdapi/v1/interrupt` stopped the job (the images made before are returned).
    public var interrupted = false
}

/// `GET /sdapi/v1/progress`.
struct ProgressResponse: Encodable {
    struct State: Encodable {
        var skipped = false
        var interrupted: Bool
        var stopping_generation = false
        var job: String
        var job_count: Int
        var job_timestamp: String
        var job_no: Int
        var sampling_step: Int
        var sampling_steps: Int
        /// Diffuse8 addition: jobs waiting behind the running one.
        var queue_depth: Int
    }
    var progress: Double
    var eta_relative: Double
    var state: State
    var current_image: String?
    var textinfo: String?

    /// Encodes `current_image` as null when absent (A1111 does), not by leaving it out.
    enum CodingKeys: String, CodingKey { case progress, eta_relative, state, current_image, textinfo }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(progress, forKey: .progress)
        try c.encode(eta_relative, forKey: .eta_relative)
        try c.encode(state, forKey: .state)
        try c.encode(current_image, forKey: .current_image)
        try c.encode(textinfo, forKey: .textinfo)
    }
}

/// One `GET /sdapi/v1/sd-models` entry.
struct SDModelItem: Encodable {
    var title: String
    var model_name: String
    var hash: String?
    var sha256: String?
    var filename: String
    var config: String?

    enum CodingKeys: String, CodingKey { case title, model_name, hash, sha256, filename, config }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(title, forKey: .title)
        try c.encode(model_name, forKey: .model_name)
        try c.encode(hash, forKey: .hash)
        try c.encode(sha256, forKey: .sha256)
        try c.encode(filename, forKey: .filename)
        try c.encode(config, forKey: .config)
    }
}

import Foundation
import Diffuse8
@testable import Diffuse8Server
import XCTest

/// `/sdapi/v1/txt2img` request parsing and validation, checked against AUTOMATIC1111's API definition
/// (`modules/api/models.py`, `StableDiffusionProcessingTxt2Img` defaults) and FastAPI's 422 layout.
final class ServerRequestTests: XCTestCase {
    let limits = ServerLimits()

    func parse(_ json: String, nativeSize: Int = 64) throws(ValidationFailure) -> Txt2ImgParameters {
        try Txt2ImgParameters.parse(Array(json.utf8), nativeSize: nativeSize, limits: limits)
    }

    func issues(_ json: String) -> [ValidationIssue] {
        do {
            _ = try parse(json)
            XCTFail("\(json) was accepted")
            return []
        } catch {
            return error.detail
        }
    }

    func testEmptyBodyTakesA1111Defaults() throws {
        let p = try parse("{}")
        // A1111: prompt "", negative_prompt "", seed -1, steps 50, cfg_scale 7.0, batch_size 1, n_iter 1,
        // sampler_index "Euler", send_images true.
        XCTAssertEqual(p.prompt, "")
        XCTAssertEqual(p.negativePrompt, "")
        XCTAssertEqual(p.seed, -1)
        XCTAssertEqual(p.steps, 50)
        XCTAssertEqual(p.cfgScale, 7.0)
        XCTAssertEqual(p.batchSize, 1)
        XCTAssertEqual(p.nIter, 1)
        XCTAssertEqual(p.kind, .euler)
        XCTAssertTrue(p.sendImages)
        XCTAssertEqual([p.width, p.height], [64, 64], "missing sizes are the model's native size")
    }

    func testClipSkipOverrideAndLoRATags() throws {
        XCTAssertEqual(try parse(#"{"prompt": "a (red:1.2) circle", "override_settings": {"CLIP_stop_at_last_layers": 2}}"#).clipSkip, 2)
        XCTAssertEqual(try parse("{}").clipSkip, 1)
        XCTAssertEqual(issues(#"{"override_settings": {"CLIP_stop_at_last_layers": 40}}"#).first?.msg.contains("1...12"), true)
        XCTAssertEqual(issues(#"{"prompt": "x <lora:style:0.8>"}"#).first?.msg.contains("LoRA tags"), true)
    }

    func testImg2ImgBodyDecodesAndResizesTheInitImage() throws {
        let png = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("img2img/init.png"))).base64EncodedString()
        let body = #"{"init_images": ["data:image/png;base64,"# + png + #""], "denoising_strength": 0.5, "width": 32, "height": 48, "steps": 4}"#
        let p = try Txt2ImgParameters.parse(Array(body.utf8), nativeSize: 64, limits: limits, imageToImage: true)
        XCTAssertEqual(p.denoisingStrength, 0.5)
        XCTAssertEqual([p.initImage?.width, p.initImage?.height], [32, 48])
        let missing = try? Txt2ImgParameters.parse(Array("{}".utf8), nativeSize: 64, limits: limits, imageToImage: true)
        XCTAssertNil(missing)
        let weak = #"{"init_images": [""# + png + #""], "denoising_strength": 0.1, "steps": 4}"#
        XCTAssertNil(try? Txt2ImgParameters.parse(Array(weak.utf8), nativeSize: 64, limits: limits, imageToImage: true))
    }

    func testWebuiapiPayloadWithUnusedFieldsAndNullsParses() throws {
        // The body webuiapi 0.9 sends for txt2img(prompt=..., seed=5, steps=4, width=64, height=64).
        let body = """
        {"enable_hr": false, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0,
         "hr_resize_y": 0, "hr_checkpoint_name": null, "hr_sampler_name": null, "hr_scheduler": null, "hr_prompt": "",
         "hr_negative_prompt": "", "denoising_strength": 0.7, "firstphase_width": 0, "firstphase_height": 0,
         "prompt": "a red circle", "styles": [], "seed": 5, "subseed": -1, "subseed_strength": 0.0,
         "seed_resize_from_h": 0, "seed_resize_from_w": 0, "batch_size": 1, "n_iter": 1, "steps": 4, "cfg_scale": 7.0,
         "width": 64, "height": 64, "restore_faces": false, "tiling": false, "do_not_save_samples": false,
         "do_not_save_grid": false, "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0,
         "s_noise": 1, "override_settings": {}, "override_settings_restore_afterwards": true, "sampler_name": "Euler a",
         "scheduler": "automatic", "sampler_index": "Euler a", "script_name": null, "script_args": [],
         "send_images": true, "save_images": false, "alwayson_scripts": {}}
        """
        let p = try parse(body)
        XCTAssertEqual(p.prompt, "a red circle")
        XCTAssertEqual(p.seed, 5)
        XCTAssertEqual(p.steps, 4)
        XCTAssertEqual(p.kind, .eulerAncestral)
    }

    func testOutOfRangeFieldsAreAllReportedWithTheirLocation() {
        let found = issues(#"{"width": 100000, "steps": 10000000, "cfg_scale": -1, "seed": -2}"#)
        XCTAssertEqual(Set(found.compactMap(\.field)), ["width", "steps", "cfg_scale", "seed"])
        XCTAssertEqual(found.first { $0.field == "width" }?.type, "less_than_equal")
        XCTAssertEqual(found.first { $0.field == "width" }?.loc, ["body", "width"])
        XCTAssertEqual(found.first { $0.field == "seed" }?.type, "greater_than_equal")
    }

    func testTypesAndMultiples() {
        XCTAssertEqual(issues(#"{"steps": "20"}"#).map(\.type), ["int_type"])
        XCTAssertEqual(issues(#"{"steps": 2.5}"#).map(\.type), ["int_from_float"])
        XCTAssertEqual(issues(#"{"width": 65}"#).map(\.type), ["multiple_of"])
        XCTAssertEqual(issues(#"{"steps": 0}"#).map(\.type), ["greater_than_equal"])
        XCTAssertEqual(issues(#"{"prompt": 3}"#).map(\.type), ["string_type"])
        XCTAssertEqual(issues(#"{"steps": 1e300}"#).map(\.type), ["less_than_equal"])
    }

    func testMalformedBodies() {
        XCTAssertEqual(issues("{not json").map(\.type), ["json_invalid"])
        XCTAssertEqual(issues("[1, 2]").map(\.type), ["dict_type"])
        XCTAssertEqual(issues("").map(\.type), ["json_invalid"])
    }

    func testDeeplyNestedJSONIsRefusedWithoutExhaustingTheStack() {
        let depth = 100_000
        let nested = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        XCTAssertEqual(issues(nested).count, 1)
        let inField = "{\"prompt\": " + nested + "}"
        XCTAssertEqual(issues(inField).count, 1)
    }

    func testImagesPerRequestAndHiresFixAreLimited() {
        XCTAssertEqual(issues(#"{"batch_size": 4, "n_iter": 5}"#).map(\.field), ["n_iter"])
        XCTAssertEqual(issues(#"{"enable_hr": true}"#).map(\.field), ["enable_hr"])
        XCTAssertEqual(issues("{\"prompt\": \"\(String(repeating: "a", count: 20_001))\"}").map(\.type), ["string_too_long"])
    }

    func testSamplerNamesAsA1111() throws {
        XCTAssertEqual(try SamplerCatalog.resolve(sampler: "Euler", scheduler: nil), .euler)
        XCTAssertEqual(try SamplerCatalog.resolve(sampler: "k_euler_a", scheduler: "Automatic"), .eulerAncestral)
        XCTAssertEqual(try SamplerCatalog.resolve(sampler: "DDIM", scheduler: "automatic"), .ddim)
        // A1111 ≥ 1.9: "DPM++ 2M" defaults to the Karras schedule; the pre-1.9 combined name still works.
        XCTAssertEqual(try SamplerCatalog.resolve(sampler: "DPM++ 2M", scheduler: "automatic"), .dpmpp2mKarras)
        XCTAssertEqual(try SamplerCatalog.resolve(sampler: "dpm++ 2m", scheduler: "Karras"), .dpmpp2mKarras)
        XCTAssertEqual(try SamplerCatalog.resolve(sampler: "DPM++ 2M Karras", scheduler: nil), .dpmpp2mKarras)
        XCTAssertEqual(issues(#"{"sampler_name": "LMS"}"#).map(\.field), ["sampler_name"])
        XCTAssertEqual(issues(#"{"sampler_name": "Euler", "scheduler": "karras"}"#).map(\.field), ["scheduler"])
        XCTAssertEqual(issues(#"{"scheduler": "exponential"}"#).map(\.field), ["scheduler"])
        XCTAssertEqual(try parse(#"{"sampler_index": "DDIM"}"#).kind, .ddim, "sampler_index is the fallback for sampler_name")
    }

    func testBasicAuthorizationHeader() {
        // RFC 7617 §2's example: user "Aladdin", password "open sesame".
        let credentials = ["Aladdin:open sesame"]
        XCTAssertTrue(APIAuth.authorizes("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", credentials: credentials))
        XCTAssertTrue(APIAuth.authorizes("basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", credentials: credentials))
        XCTAssertFalse(APIAuth.authorizes("Basic QWxhZGRpbjpvcGVuIHNlc2FtZg==", credentials: credentials))
        XCTAssertFalse(APIAuth.authorizes("Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==", credentials: credentials))
        XCTAssertFalse(APIAuth.authorizes("Basic %%%", credentials: credentials))
        XCTAssertFalse(APIAuth.authorizes(nil, credentials: credentials))
        XCTAssertEqual(try APIAuth.parse("a:b, c:d:e"), ["a:b", "c:d:e"])
        XCTAssertThrowsError(try APIAuth.parse("nopassword"))
    }

    func testModelTitlesMatchLikeA1111() {
        let catalog = ModelCatalog(entries: [.init(name: "default", path: "/m/default"), .init(name: "SD15-int8", path: "/m/SD15-int8")])
        XCTAssertEqual(catalog.entry(title: "sd15-int8")?.path, "/m/SD15-int8")
        XCTAssertEqual(catalog.entry(title: "default [0123456789]")?.path, "/m/default")
        XCTAssertNil(catalog.entry(title: "other"))
    }
}

"""A1111 client compatibility test: `webuiapi` and `sd-parsers` (both from PyPI, unchanged) against a running
`diffuse8 serve`.

Usage: a1111_client_test.py BASE_URL USER PASSWORD
The server must list the models `default` and `tiny-sd15` (`--models-dir`) and run with `--api-auth USER:PASSWORD`.
The expected values come from the A1111 API (field names, info JSON, infotext layout as sd-parsers reads it) and
from the requests themselves; nothing is taken from the server under test.
"""

import sys
import unittest
from urllib.parse import urlparse

import requests
import webuiapi
from sd_parsers import ParserManager

BASE, USER, PASSWORD = sys.argv[1], sys.argv[2], sys.argv[3]
PROMPT = "a large red circle above a small blue square on a white background"
parser = ParserManager()


def client(**kwargs):
    url = urlparse(BASE)
    return webuiapi.WebUIApi(host=url.hostname, port=url.port, username=USER, password=PASSWORD, **kwargs)


def parsed(image):
    """The PNG's `parameters` chunk as sd-parsers reads it: (sampler, its parameters, prompt, negative prompt, model)."""
    info = parser.parse(image)
    assert info is not None, "sd-parsers found no generation parameters in the PNG"
    sampler = info.samplers[0]
    prompt = " ".join(p.value for p in sampler.prompts)
    negative = " ".join(p.value for p in sampler.negative_prompts)
    return sampler.name, sampler.parameters, prompt, negative, sampler.model.name if sampler.model else None


class A1111ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.api = client(sampler="Euler", steps=4)
        cls.api.util_set_model("default")

    def test_samplers_and_schedulers_use_a1111_names(self):
        names = self.api.util_get_sampler_names()
        for name in ["Euler", "Euler a", "DDIM", "DPM++ 2M"]:
            self.assertIn(name, names)
        self.assertIn("karras", self.api.util_get_scheduler_names())

    def test_txt2img_returns_png_whose_parameters_parse(self):
        result = self.api.txt2img(prompt=PROMPT, negative_prompt="green", seed=7, cfg_scale=5, steps=4,
                                  width=64, height=64, sampler_name="Euler", scheduler="automatic")
        self.assertEqual(len(result.images), 1)
        self.assertEqual(result.image.size, (64, 64))
        self.assertEqual(result.info["seed"], 7)
        self.assertEqual(result.info["all_seeds"], [7])
        self.assertEqual(result.info["sampler_name"], "Euler")
        self.assertEqual(result.info["width"], 64)
        self.assertEqual(result.parameters["prompt"], PROMPT)
        sampler, params, prompt, negative, model = parsed(result.image)
        self.assertEqual(sampler, "Euler")
        self.assertEqual(params["seed"], "7")
        self.assertEqual(params["steps"], "4")
        self.assertEqual(float(params["cfg_scale"]), 5.0)
        self.assertEqual(prompt, PROMPT)
        self.assertEqual(negative, "green")
        self.assertEqual(model, "default")

    def test_same_seed_same_image_other_seed_other_image(self):
        args = dict(prompt=PROMPT, steps=3, width=64, height=64, cfg_scale=5)
        a = self.api.txt2img(seed=11, **args).image.tobytes()
        b = self.api.txt2img(seed=11, **args).image.tobytes()
        c = self.api.txt2img(seed=12, **args).image.tobytes()
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)

    def test_random_seed_and_batches(self):
        result = self.api.txt2img(prompt=PROMPT, seed=-1, steps=2, width=64, height=64, batch_size=1, n_iter=2)
        seed = result.info["seed"]
        self.assertTrue(0 <= seed < 2**32)
        self.assertEqual(result.info["all_seeds"], [seed, seed + 1])
        self.assertEqual(len(result.images), 2)
        self.assertEqual([parsed(i)[1]["seed"] for i in result.images], [str(seed), str(seed + 1)])

    def test_every_sampler_generates(self):
        for sampler, scheduler, written in [("Euler a", "automatic", "Euler a"), ("DDIM", "automatic", "DDIM"),
                                            ("DPM++ 2M", "karras", "DPM++ 2M Karras")]:
            with self.subTest(sampler=sampler):
                result = self.api.txt2img(prompt=PROMPT, seed=3, steps=3, width=64, height=64,
                                          sampler_name=sampler, scheduler=scheduler)
                self.assertEqual(parsed(result.image)[0], written)

    def test_options_switch_model(self):
        self.assertEqual(sorted(self.api.util_get_model_names()), ["default", "tiny-sd15"])
        try:
            self.api.util_set_model("tiny-sd15")
            self.assertEqual(self.api.util_get_current_model(), "tiny-sd15")
            result = self.api.txt2img(prompt="a cat", seed=1, steps=2, width=32, height=32)
            self.assertEqual(parsed(result.image)[4], "tiny-sd15")
        finally:
            self.api.util_set_model("default")
        self.assertEqual(self.api.util_get_current_model(), "default")

    def test_progress_when_idle(self):
        progress = self.api.get_progress()
        self.assertEqual(progress["progress"], 0)
        self.assertEqual(progress["state"]["job_count"], 0)

    def test_invalid_requests_get_422_with_detail(self):
        with self.assertRaises(RuntimeError) as raised:
            self.api.txt2img(prompt=PROMPT, width=100000, steps=4)
        self.assertEqual(raised.exception.args[0], 422)
        with self.assertRaises(RuntimeError) as raised:
            self.api.txt2img(prompt=PROMPT, sampler_name="No such sampler", width=64, height=64)
        self.assertEqual(raised.exception.args[0], 422)

    def test_wrong_or_missing_auth_is_refused(self):
        self.assertEqual(requests.get(f"{BASE}/sdapi/v1/options", timeout=10).status_code, 401)
        self.assertEqual(requests.get(f"{BASE}/sdapi/v1/options", auth=(USER, "wrong"), timeout=10).status_code, 401)
        self.assertEqual(requests.get(f"{BASE}/internal/ping", timeout=10).status_code, 200)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)

"""Reference schedules and denoising steps of diffusers' schedulers for the Swift schedulers' tests.

For each case (a diffusers scheduler class built with `Class.from_config(base_config, **overrides)`, as a pipeline
swap does) and each step count, records: timesteps, sigmas (where the class has them), init_noise_sigma, and a
denoising loop on fixed tensors — the initial sample is `torch.randn(shape, generator=g) * init_noise_sigma` with
`g = torch.Generator("cpu").manual_seed(seed)`, the model output at step i is MODEL_OUTPUTS[i % 4], and ancestral /
eta>0 steps draw their noise from the same generator (the order diffusers' pipelines use). Per step it records
`scale_model_input(sample, t)` and `step(...).prev_sample`.

Writes Tests/Fixtures/reference/schedulers.safetensors and schedulers.json (the case list).
"""
import json
import os

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "Tests", "Fixtures")
CONFIGS = {
    "sd15": "tiny-sd15/scheduler/scheduler_config.json",   # PNDMScheduler config (SD1.x)
    "sdxl": "tiny-sdxl/scheduler/scheduler_config.json",   # EulerDiscreteScheduler config (SDXL)
}
CLASSES = {c.__name__: c for c in (EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DDIMScheduler,
                                   DPMSolverMultistepScheduler)}
SHAPE = [1, 4, 2, 4]
ALL_STEPS = [1, 2, 7, 30, 50]
SOME_STEPS = [7, 30]


def cases():
    result = []

    def add(config, cls, overrides=None, steps=ALL_STEPS, eta=0.0, tag=""):
        name = f"{config}-{cls}" + (f"-{tag}" if tag else "")
        result.append({"name": name, "class": cls, "config": config, "config_path": CONFIGS[config],
                       "overrides": overrides or {}, "steps": steps, "eta": eta, "seed": 1234})

    for config in CONFIGS:
        add(config, "EulerDiscreteScheduler")
        add(config, "EulerAncestralDiscreteScheduler")
        add(config, "DDIMScheduler")
        add(config, "DPMSolverMultistepScheduler")
        add(config, "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}, tag="karras")
    add("sd15", "EulerDiscreteScheduler", {"use_karras_sigmas": True}, SOME_STEPS, tag="karras")
    add("sd15", "EulerDiscreteScheduler", {"final_sigmas_type": "sigma_min"}, SOME_STEPS, tag="sigmamin")
    add("sd15", "DPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min"}, SOME_STEPS, tag="sigmamin")
    add("sd15", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min"},
        SOME_STEPS, tag="karras-sigmamin")
    add("sd15", "DPMSolverMultistepScheduler", {"lower_order_final": False}, [7], tag="nolof")
    add("sd15", "DPMSolverMultistepScheduler", {"euler_at_final": True, "final_sigmas_type": "sigma_min"}, [7],
        tag="eulerfinal")
    add("sd15", "DPMSolverMultistepScheduler", {"solver_type": "heun"}, [7], tag="heun")
    add("sd15", "DPMSolverMultistepScheduler", {"solver_order": 1}, [7], tag="order1")
    add("sdxl", "DPMSolverMultistepScheduler", {"lambda_min_clipped": -2.0, "timestep_spacing": "linspace"}, [7],
        tag="lmc-linspace")
    add("sdxl", "DPMSolverMultistepScheduler", {"lambda_min_clipped": -2.0}, [7], tag="lmc-leading")
    add("sd15", "DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, SOME_STEPS, tag="noclip")
    add("sd15", "DDIMScheduler", {"clip_sample": False}, [7], eta=0.5, tag="eta")
    add("sd15", "EulerDiscreteScheduler", {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
        [7], tag="linear")
    for spacing in ("trailing", "linspace"):
        for cls in CLASSES:
            add("sdxl", cls, {"timestep_spacing": spacing}, SOME_STEPS + [1], tag=spacing)
    for cls in CLASSES:
        add("sd15", cls, {"prediction_type": "v_prediction"}, [7], tag="vpred")
    add("sd15", "DPMSolverMultistepScheduler", {"prediction_type": "v_prediction", "use_karras_sigmas": True}, [7],
        tag="vpred-karras")
    return result


def model_outputs():
    rng = np.random.default_rng(7)
    return torch.from_numpy(rng.standard_normal([4] + SHAPE).astype(np.float32))


def main():
    outputs = model_outputs()
    tensors = {"model_outputs": outputs}
    case_list = cases()
    for case in case_list:
        with open(os.path.join(FIXTURES, case["config_path"])) as f:
            base = json.load(f)
        cls = CLASSES[case["class"]]
        for steps in case["steps"]:
            scheduler = cls.from_config(base, **case["overrides"])
            scheduler.set_timesteps(steps)
            prefix = f"{case['name']}/{steps}/"
            tensors[prefix + "timesteps"] = scheduler.timesteps.to(torch.float32).clone()
            if hasattr(scheduler, "sigmas") and case["class"] != "DDIMScheduler":
                tensors[prefix + "sigmas"] = torch.as_tensor(scheduler.sigmas, dtype=torch.float32).clone()
            init_sigma = float(scheduler.init_noise_sigma)
            tensors[prefix + "init_noise_sigma"] = torch.tensor([init_sigma], dtype=torch.float32)
            generator = torch.Generator("cpu").manual_seed(case["seed"])
            sample = torch.randn(SHAPE, generator=generator, dtype=torch.float32) * scheduler.init_noise_sigma
            tensors[prefix + "sample0"] = sample.clone()
            scaled, prev = [], []
            for i, t in enumerate(scheduler.timesteps):
                scaled.append(scheduler.scale_model_input(sample, t))
                kwargs = {}
                if case["class"] == "DDIMScheduler":
                    kwargs["eta"] = case["eta"]
                    if case["eta"] > 0:
                        kwargs["generator"] = generator
                elif case["class"] == "EulerAncestralDiscreteScheduler":
                    kwargs["generator"] = generator
                sample = scheduler.step(outputs[i % 4], t, sample, **kwargs).prev_sample
                prev.append(sample)
            if case["class"] in ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler"):
                tensors[prefix + "scaled"] = torch.stack(scaled).contiguous()
            tensors[prefix + "prev"] = torch.stack(prev).contiguous()
    save_file(tensors, os.path.join(FIXTURES, "reference", "schedulers.safetensors"))
    with open(os.path.join(FIXTURES, "reference", "schedulers.json"), "w") as f:
        json.dump({"shape": SHAPE, "cases": case_list}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

"""Our nodes under ComfyUI's MultiGPU CFG Split (ComfyUI 0.30+): one GPU against two, in one process.

With two GPUs and CFG, core evaluates cond and uncond at the same time in two threads, each on its own GPU,
through the same patch objects. For each scheme this measures, on one GPU and on two:
  - plain: KSampler without cross-frame attention (the baseline);
  - batch: Batch Video Sampler, whole clip in one batch;
  - fpb2, fpb4: Batch Video Sampler with frames_per_batch 2 and 4;
  - manual: Store Reference Attention -> KSampler on frame 0 -> Cross-Frame Attention Patch -> KSampler on
    the other frames (the method's original two-pass graph).
and reports: time (best of the repeats) and its ratio to plain on the same number of GPUs, peak memory on each
GPU, whether all repeats are bit-identical, the largest difference between the two-GPU and the one-GPU
output beside the same figure for plain sampling (round-off of the GPUs themselves) and the method's effect
(batch vs plain on one GPU).

The model comes from a core loader (comfy.sd.load_diffusion_model), which MultiGPU CFG Split needs to make its
per-GPU copies: random weights (std 1/sqrt(fan_in)) in a real checkpoint's shape, saved to a temporary file.
Nothing is downloaded.

Usage (a machine with two GPUs; with one GPU only the one-GPU half runs and the report says so):
  COMFYUI_PATH=<ComfyUI 0.30+> python benchmarks/multigpu_bench.py --shape sd15 --frames 16 --steps 20
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_gpu_bench import SHAPES, build_model, clip_latent, conditioning, setup_comfy, write_report  # noqa: E402

SCHEMES = ("plain", "batch", "fpb2", "fpb4", "manual")


def save_random_unet(shape: str, folder: Path) -> Path:
    from safetensors.torch import save_file
    patcher = build_model(shape, torch.device("cpu"), torch.float16)
    path = folder / f"random_{shape}_unet.safetensors"
    save_file({k: v.contiguous() for k, v in patcher.model.diffusion_model.state_dict().items()}, str(path))
    return path


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.float().cpu().numpy().tobytes()).hexdigest()[:16]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="sd15", choices=["sd15", "sdxl"])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per scheme after one warm-up")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    comfy_nodes = setup_comfy(cpu=False)
    import comfy.sd
    from comfy_extras.nodes_multigpu import MultiGPUCFGSplitNode

    mapping = comfy_nodes.NODE_CLASS_MAPPINGS
    Store, Patch, Sampler = (mapping[k] for k in ("CFA_StoreReferenceAttention", "CFA_CrossFrameAttentionPatch",
                                                 "CFA_BatchVideoSampler"))
    gpus = torch.cuda.device_count()
    with tempfile.TemporaryDirectory() as tmp:
        one_gpu = comfy.sd.load_diffusion_model(str(save_random_unet(a.shape, Path(tmp))))
        models = {1: one_gpu}
        if gpus >= 2:
            models[2] = MultiGPUCFGSplitNode.execute(one_gpu, 2).args[0]
        positive, negative = conditioning(a.shape)
        latent = clip_latent(a.shape, a.frames)

        def ksampler(model, lat_in):
            return comfy_nodes.common_ksampler(model, 1, a.steps, a.cfg, "euler", "normal", positive, negative,
                                               lat_in)[0]

        def video(model, frames_per_batch):
            return Sampler.execute(model, positive, negative, latent, 1, a.steps, a.cfg, "euler", "normal", 1.0,
                                   frames_per_batch, "first+previous", False, "output", 0.0, 1.0, "auto", "auto",
                                   False).args[0]

        def manual(model):
            store_model, state = Store.execute(model, "output", "auto", "auto", 1).args
            reference = ksampler(store_model, {"samples": latent["samples"][:1]})
            load_model = Patch.execute(model, state, reference, "first+previous", False, 0.0, 1.0).args[0]
            rest = ksampler(load_model, {"samples": latent["samples"][1:]})
            return {"samples": torch.cat([reference["samples"], rest["samples"]])}

        runs = {"plain": lambda m: ksampler(m, latent), "batch": lambda m: video(m, 0),
                "fpb2": lambda m: video(m, 2), "fpb4": lambda m: video(m, 4), "manual": manual}
        results, outputs = {}, {}
        for n_gpus, model in models.items():
            for name in a.schemes.split(","):
                fn = runs[name]
                fn(model)  # warm-up: loading, per-GPU copies, kernels
                torch.cuda.synchronize()
                for d in range(gpus):
                    torch.cuda.reset_peak_memory_stats(d)
                times, digests = [], []
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    out = fn(model)["samples"]
                    for d in range(gpus):
                        torch.cuda.synchronize(d)
                    times.append(time.perf_counter() - t0)
                    digests.append(digest(out))
                outputs[(n_gpus, name)] = out.float().cpu()
                peaks = [round(torch.cuda.max_memory_allocated(d) / 2**30, 2) for d in range(gpus)]
                results[f"{name}@{n_gpus}gpu"] = {"seconds": round(min(times), 3),
                                                  "all_seconds": [round(t, 3) for t in times],
                                                  "peak_gib_per_gpu": peaks,
                                                  "repeats_identical": len(set(digests)) == 1}
                print(f"{name:7s} {n_gpus} GPU  {min(times):7.3f} s  peak {peaks} GiB  "
                      f"repeats identical: {len(set(digests)) == 1}", flush=True)
        for key, r in results.items():
            name, n = key.split("@")
            plain = results.get(f"plain@{n}")
            if plain:
                r["vs_plain_same_gpus"] = round(r["seconds"] / plain["seconds"], 3)
            if n == "2gpu":
                r["max_abs_diff_vs_1gpu"] = float((outputs[(2, name)] - outputs[(1, name)]).abs().max())
                r["speedup_vs_1gpu"] = round(results[f"{name}@1gpu"]["seconds"] / r["seconds"], 3)
        report = {"devices": [torch.cuda.get_device_name(d) for d in range(gpus)], "torch": torch.__version__,
                  "shape": a.shape, "px": SHAPES[a.shape]["px"], "frames": a.frames, "steps": a.steps,
                  "cfg": a.cfg, "dtype": "float16", "sampler": "euler", "two_gpu_half_ran": gpus >= 2,
                  "output_scale": float(outputs[(1, "plain")].abs().max()) if (1, "plain") in outputs else None,
                  "effect_batch_vs_plain_1gpu": (float((outputs[(1, "batch")] - outputs[(1, "plain")]).abs().max())
                                                 if (1, "batch") in outputs and (1, "plain") in outputs else None),
                  "results": results}
        write_report(report, a.json)


if __name__ == "__main__":
    main()

"""Benchmark of the nodes inside ComfyUI: time and peak GPU memory of a whole clip sampled

  - plain: ComfyUI's own sampler (what KSampler runs), no cross-frame attention -- the baseline;
  - floor_cat: output-block self-attention over [x; x] (doubled keys, no gathering): the method's own floor;
  - batch: Batch Video Sampler, whole clip in one batch (the fast path);
  - chunked: Batch Video Sampler with frames_per_batch = 4 (banks on the GPU, then on the CPU);
  - frame-by-frame: Batch Video Sampler with frames_per_batch = 1, i.e. the method's original
    one-frame-at-a-time STORE/LOAD scheme, through the same banks.

`--suite windows` instead runs every target of issue 8 (windows inside one sampler pass) in one process:
  A. SD1.5 512², 64 frames: plain, Batch Video Sampler whole clip, windows of 16;
  B. SD1.5 512², 16 frames: plain, whole clip, windows of 4, and core's Context Windows (Manual) of 4
     (batched schedule) on the plain model, without our patch;
  C. SD1.5 512², windows of 16 at 16, 64 and 192 frames: peak memory (192 vs 16) and seconds per frame;
  D. SDXL 1024², 64 frames: plain and windows of 4 (peak memory against the 12 GiB target).
On ComfyUI 0.3.64 core's context windows can only step an image batch of steps + 1 frames (its step lookup
compares every image's sigma with the schedule), so group B runs 15 steps there (16 frames); ratios only.

Random weights (std 1/sqrt(fan_in)) in the shape of a real checkpoint; nothing is downloaded. Every number of
one invocation comes from the same process on the same GPU; ratios are against `plain` of that run.
Usage: COMFYUI_PATH=... python benchmarks/comfy_gpu_bench.py --shape sd15 --frames 16 --steps 20
       COMFYUI_PATH=... python benchmarks/comfy_gpu_bench.py --suite windows --json windows.json
Needs ComfyUI's Python requirements on the GPU machine (an offline machine may lack torchsde, trampoline and
av: bring their wheels). `--cpu --shape tiny` is a quick smoke run anywhere.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

SHAPES = {
    # (unet config, latent channels/size, context dim, pooled dim) -- the layouts ComfyUI detects as SD1.5/SDXL
    "sd15": dict(unet={"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
                       "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
                       "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
                       "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
                       "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
                       "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                       "use_temporal_attention": False, "use_temporal_resblock": False},
                 px=512, context=768, pooled=None),
    "sdxl": dict(unet={"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
                       "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
                       "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
                       "channel_mult": [1, 2, 4], "transformer_depth_middle": 10,
                       "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
                       "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
                       "use_temporal_attention": False, "use_temporal_resblock": False},
                 px=1024, context=2048, pooled=1280),
    "tiny": dict(unet={"context_dim": 32, "model_channels": 32, "in_channels": 4, "out_channels": 4,
                       "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
                       "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
                       "use_spatial_transformer": True, "use_linear_in_transformer": False, "legacy": False,
                       "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False,
                       "image_size": 32, "num_head_channels": 16, "num_heads": -1},
                 px=64, context=32, pooled=None),
}


def setup_comfy(cpu: bool):
    comfy_path = os.environ["COMFYUI_PATH"]
    sys.path.insert(0, comfy_path)
    from comfy.cli_args import args
    args.cpu = cpu
    import nodes as comfy_nodes
    assert asyncio.run(comfy_nodes.load_custom_node(str(REPO), module_parent="custom_nodes"))
    return comfy_nodes


def random_weights_(module, generator) -> None:
    """Matrices ~ N(0, 1/fan_in), norm weights/scales 1, biases 0: activations keep their scale through any
    depth. Values are drawn on the generator's device (a GPU generator for the 12B-parameter DiTs)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                values = torch.randn(p.shape, generator=generator, device=generator.device)
                p.copy_(values.div_(math.sqrt(p[0].numel())))
            elif name.endswith("weight") or name.endswith("scale"):
                p.fill_(1.0)
            else:
                p.zero_()


def write_report(report: dict, path: str) -> None:
    """Print the report, and write it to `path` as JSON when one is given."""
    text = json.dumps(report, indent=1)
    print(text)
    if path:
        Path(path).write_text(text)


def build_comfy_model(unet_config: dict, latent_format, model_class, device, dtype, weight_device="cpu"):
    """A ComfyUI model of `model_class` built from `unet_config` with its weights stored in `dtype` (as a real
    checkpoint loads), random weights (see random_weights_, drawn on `weight_device`), in a ModelPatcher."""
    import comfy.model_patcher
    import comfy.supported_models_base
    unet = dict(unet_config, dtype=dtype)

    class Config(comfy.supported_models_base.BASE):
        unet_config = unet
        unet_extra_config = {}

    Config.latent_format = latent_format
    config = Config(dict(unet))
    config.set_inference_dtype(dtype, None)
    model = model_class(config, device=device)
    random_weights_(model.diffusion_model, torch.Generator(device=weight_device).manual_seed(0))
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def build_model(shape: str, device, dtype):
    import comfy.latent_formats
    import comfy.model_base
    spec = SHAPES[shape]
    if spec["pooled"]:
        return build_comfy_model(spec["unet"], comfy.latent_formats.SDXL, comfy.model_base.SDXL, device, dtype)
    return build_comfy_model(spec["unet"], comfy.latent_formats.SD15, comfy.model_base.BaseModel, device, dtype)


def conditioning(shape: str):
    spec = SHAPES[shape]
    g = torch.Generator().manual_seed(1)
    def one():
        extra = {}
        if spec["pooled"]:
            extra = {"pooled_output": torch.randn(1, spec["pooled"], generator=g),
                     "width": spec["px"], "height": spec["px"]}
        return [[torch.randn(1, 77, spec["context"], generator=g), extra]]
    return one(), one()


def measure(fn, repeats: int, cpu: bool, warmup=None) -> tuple[dict, torch.Tensor]:
    """One warm-up (`warmup`, else `fn`), then `repeats` timed runs of `fn`: best seconds and the peak GPU
    memory of the timed runs."""
    (warmup or fn)()
    if not cpu:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if not cpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if not cpu else float("nan")
    return {"seconds": min(times), "all_seconds": [round(t, 3) for t in times], "peak_gib": peak}, \
        out["samples"].float()


def against_plain(results: dict, outputs: dict, cpu: bool, compare_to: str, only=lambda name: True):
    """Adds to every result its time and peak memory relative to `plain` (same run), and to the results that
    `only` selects the largest difference of its output from `compare_to`'s; returns plain's output scale."""
    base = results.get("plain")
    for name, r in results.items():
        if base:
            r["vs_plain"] = r["seconds"] / base["seconds"]
            r["peak_vs_plain"] = r["peak_gib"] / base["peak_gib"] if not cpu else None
        if compare_to in outputs and name != compare_to and only(name):
            r[f"max_abs_diff_vs_{compare_to}"] = float((outputs[name] - outputs[compare_to]).abs().max())
    return float(outputs["plain"].abs().max()) if "plain" in outputs else None


def clip_latent(shape: str, frames: int) -> dict:
    lat = SHAPES[shape]["px"] // 8
    base = torch.randn(1, 4, lat, lat, generator=torch.Generator().manual_seed(2))
    drift = torch.randn(1, 4, lat, lat, generator=torch.Generator().manual_seed(3))
    return {"samples": torch.cat([base + 0.05 * k * drift for k in range(frames)])}


def suite_windows(comfy_nodes, cpu: bool, repeats: int, cfg: float, steps: int) -> dict:
    import gc
    import inspect
    import comfy.model_management
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode
    device = torch.device("cpu" if cpu else "cuda")
    dtype = torch.float32 if cpu else torch.float16
    sampler = comfy_nodes.NODE_CLASS_MAPPINGS["CFA_BatchVideoSampler"]
    # On the CPU (a smoke run) every group shrinks: tiny model, an eighth of the frames.
    sd, xl, div = ("tiny", "tiny", 8) if cpu else ("sd15", "sdxl", 1)
    frames = lambda n: max(2, n // div)
    report = {"groups": {}}

    def run_group(name, shape, n, schemes, group_steps, reps):
        model = build_model(shape, device, dtype)
        positive, negative = conditioning(shape)
        latent = clip_latent(shape, n)

        def plain(m=model):
            return comfy_nodes.common_ksampler(m, 1, group_steps, cfg, "euler", "normal", positive, negative,
                                               latent)[0]

        def video(fpb):
            return lambda: sampler.execute(model, positive, negative, latent, 1, group_steps, cfg, "euler",
                                           "normal", 1.0, fpb, "first+previous", False, "output", 0.0, 1.0,
                                           "auto", "auto", False).args[0]

        def core_windows(length):
            kw = dict(model=model, context_length=length, context_overlap=0, context_schedule="batched",
                      context_stride=1, closed_loop=False, fuse_method="flat", dim=0)
            params = inspect.signature(ContextWindowsManualNode.execute).parameters
            if "freenoise" in params:
                kw["freenoise"] = False
            if "causal_window_fix" in params:
                kw["causal_window_fix"] = False   # same windows as ours (no frame prepended)
            m = ContextWindowsManualNode.execute(**kw).args[0]
            return lambda: plain(m)

        make = {"plain": lambda: plain, "whole": lambda: video(n)}
        results, outputs = {}, {}
        for scheme in schemes:
            if scheme.startswith("windows_"):
                fn = video(int(scheme.split("_")[1]))
            elif scheme.startswith("core_windows_"):
                fn = core_windows(int(scheme.split("_")[2]))
            else:
                fn = make[scheme]()
            results[scheme], outputs[scheme] = measure(fn, reps, cpu)
            r = results[scheme]
            print(f"[{name}] {scheme:18s} {r['seconds']:8.3f} s  peak {r['peak_gib']:6.2f} GiB", flush=True)
        scale = against_plain(results, outputs, cpu, "whole", only=lambda scheme: scheme.startswith("windows_"))
        report["groups"][name] = {"shape": shape, "px": SHAPES[shape]["px"], "frames": n, "steps": group_steps,
                                  "output_scale": scale, "results": results}
        # Unload it: ComfyUI keeps loaded models, and the next group's peak must count only its own model.
        del model, outputs
        comfy.model_management.unload_all_models()
        gc.collect()
        comfy.model_management.soft_empty_cache()
        return results

    a = run_group("A_sd15_64", sd, frames(64), ["plain", "whole", "windows_16"], steps, repeats)
    old_core = "causal_window_fix" not in inspect.signature(ContextWindowsManualNode.execute).parameters
    n_b = frames(16)
    b = run_group("B_sd15_16", sd, n_b, ["plain", "whole", "windows_4", "core_windows_4"],
                  n_b - 1 if old_core else steps, repeats)
    c16 = run_group("C_sd15_16_windows16", sd, frames(16), ["windows_16"], steps, 1)
    c192 = run_group("C_sd15_192_windows16", sd, frames(192), ["windows_16"], steps, 1)
    d = run_group("D_sdxl_64", xl, frames(64), ["plain", "windows_4"], steps, 1)
    t16, t64, t192 = c16["windows_16"]["seconds"], a["windows_16"]["seconds"], c192["windows_16"]["seconds"]
    report["targets"] = {
        "A: windows of 16 / whole clip (<= 1.03)": a["windows_16"]["seconds"] / a["whole"]["seconds"],
        "B: our windows of 4 / core windows of 4 without the patch (<= 1.15)":
            b["windows_4"]["seconds"] / b["core_windows_4"]["seconds"],
        "B: core windows of 4 / plain": b["core_windows_4"]["seconds"] / b["plain"]["seconds"],
        "C: peak 192 frames / peak 16 frames, windows of 16 (<= 1.1)":
            c192["windows_16"]["peak_gib"] / c16["windows_16"]["peak_gib"] if not cpu else None,
        "C: seconds per frame at 16 / 64 / 192 frames": [t16 / frames(16), t64 / frames(64), t192 / frames(192)],
        "C: slope seconds per frame (16 -> 192)": (t192 - t16) / (frames(192) - frames(16)),
        "D: SDXL 64 frames windows of 4 peak GiB (<= 12)": d["windows_4"]["peak_gib"],
        "D: SDXL windows of 4 / plain (time)": d["windows_4"]["seconds"] / d["plain"]["seconds"],
    }
    for k, v in report["targets"].items():
        print(f"{k}: {v}")
    return report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="sd15", choices=sorted(SHAPES))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--schemes", default="plain,floor_cat,batch,chunked,chunked_cpu,frame_by_frame")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per scheme (after one warm-up)")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--json", default="")
    ap.add_argument("--suite", default="", choices=["", "windows"],
                    help="windows: every target run of issue 8 in one process (see the module docstring)")
    a = ap.parse_args()
    cpu = a.cpu or not torch.cuda.is_available()
    comfy_nodes = setup_comfy(cpu)
    if a.suite == "windows":
        t0 = time.perf_counter()
        report = suite_windows(comfy_nodes, cpu, a.repeats, a.cfg, a.steps)
        report.update({"device": torch.cuda.get_device_name() if not cpu else "cpu", "torch": torch.__version__,
                       "dtype": "float32" if cpu else "float16", "sampler": "euler", "cfg": a.cfg,
                       "wall_seconds": time.perf_counter() - t0})
        write_report(report, a.json)
        return
    import comfy.sample
    device = torch.device("cpu" if cpu else "cuda")
    dtype = torch.float32 if cpu else torch.float16
    model = build_model(a.shape, device, dtype)
    positive, negative = conditioning(a.shape)
    latent = clip_latent(a.shape, a.frames)
    sampler = comfy_nodes.NODE_CLASS_MAPPINGS["CFA_BatchVideoSampler"]

    def plain():
        return comfy_nodes.common_ksampler(model, 1, a.steps, a.cfg, "euler", "normal", positive, negative, latent)[0]

    def video(frames_per_batch, bank_device="auto"):
        def go():
            return sampler.execute(model, positive, negative, latent, 1, a.steps, a.cfg, "euler", "normal", 1.0,
                                   frames_per_batch, "first+previous", False, "output", 0.0, 1.0, bank_device,
                                   "auto", False).args[0]
        return go

    def floor_cat():
        """Keys doubled with no gathering at all (output blocks attend to [x; x]): the cost of attending over
        2T keys by itself, which no implementation of the method at this patch point can go below."""
        m = model.clone()

        def doubled(n, context, value, extra):
            if extra["block"][0] != "output":
                return n, context, value
            kv = torch.cat([n, n], dim=1)
            return n, kv, kv
        m.set_model_attn1_patch(doubled)
        return lambda: comfy_nodes.common_ksampler(m, 1, a.steps, a.cfg, "euler", "normal", positive, negative,
                                                   latent)[0]

    schemes = {"plain": plain, "floor_cat": floor_cat(), "batch": video(0), "chunked": video(a.chunk),
               "chunked_cpu": video(a.chunk, "cpu"), "frame_by_frame": video(1)}
    results, outputs = {}, {}
    for name in a.schemes.split(","):
        results[name], outputs[name] = measure(schemes[name], a.repeats, cpu)
        print(f"{name:15s} {results[name]['seconds']:8.3f} s  peak {results[name]['peak_gib']:6.2f} GiB", flush=True)
    scale = against_plain(results, outputs, cpu, "batch")
    if "frame_by_frame" in results and "batch" in results:
        results["batch"]["speedup_vs_frame_by_frame"] = results["frame_by_frame"]["seconds"] / results["batch"]["seconds"]
    report = {"device": torch.cuda.get_device_name() if not cpu else "cpu", "torch": torch.__version__,
              "shape": a.shape, "px": SHAPES[a.shape]["px"], "frames": a.frames, "steps": a.steps, "cfg": a.cfg,
              "dtype": str(dtype), "sampler": "euler", "output_scale": scale, "results": results}
    write_report(report, a.json)


if __name__ == "__main__":
    main()

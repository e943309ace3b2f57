"""Benchmark of flow-guided fusion (issue 16): what it costs on top of sampling, and how long the source flow
takes on the CPUs.

  - flow: Source Flow's work for the clip (DIS flow + forward-backward check, every core, one DisFlow per
    thread), best of --repeats, also on one thread for scale; the first call of the Source Flow node
    (hashing the frames included) too;
  - sampling: Batch Video Sampler on the whole clip, without fusion (the baseline) and with Flow Guided Fusion
    at its defaults (same model, noise, steps); ratio fused / baseline, from the same process and GPU;
  - fuse_only: the fusion of one step's denoised prediction by itself (all frames, in clip order), times the
    number of steps, as a share of the baseline's sampling time -- the precise figure, not subject to the
    run-to-run noise of two whole sampling runs.

Random SD1.5-shaped weights (benchmarks/comfy_gpu_bench.py), a synthetic panning-and-zooming texture as the
source (no footage on the GPU machine), fp16 on the GPU. Nothing is downloaded.

  COMFYUI_PATH=$HOME/ComfyUI python benchmarks/fusion_bench.py --frames 64 --steps 20 --json fusion.json
  COMFYUI_PATH=... python benchmarks/fusion_bench.py --cpu --shape tiny --frames 4 --steps 2   # smoke run
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_gpu_bench import SHAPES, build_model, conditioning, measure, setup_comfy, write_report  # noqa: E402


def source_frames(frames: int, px: int) -> np.ndarray:
    """T x px x px x 3 uint8: a smooth random texture that pans 3 px and zooms 0.5% per frame."""
    g = torch.Generator().manual_seed(5)
    coarse = torch.rand(1, 3, px // 8, px // 8, generator=g)
    texture = F.interpolate(coarse, size=(2 * px, 2 * px), mode="bicubic", align_corners=False).clamp(0, 1)
    out = []
    for t in range(frames):
        zoom = 1.0 + 0.005 * t
        theta = torch.tensor([[0.5 / zoom, 0.0, 0.003 * t], [0.0, 0.5 / zoom, 0.0]])[None]
        grid = F.affine_grid(theta, (1, 3, px, px), align_corners=False)
        frame = F.grid_sample(texture, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        out.append((frame[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    return np.stack(out)


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="sd15", choices=["sd15", "tiny"])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    cpu = a.cpu or not torch.cuda.is_available()
    comfy_nodes = setup_comfy(cpu)
    mapping = comfy_nodes.NODE_CLASS_MAPPINGS
    pack = sys.modules[mapping["CFA_FlowGuidedFusion"].__module__.rsplit(".", 2)[0]]
    clip_flow = importlib.import_module(pack.__name__ + ".consistency.clip_flow")
    fusion_core = importlib.import_module(pack.__name__ + ".attention.fusion")
    px = SHAPES[a.shape]["px"]
    frames = source_frames(a.frames, px)
    report = {"device": torch.cuda.get_device_name() if not cpu else "cpu", "torch": torch.__version__,
              "shape": a.shape, "px": px, "frames": a.frames, "steps": a.steps, "cfg": a.cfg,
              "dtype": "float32" if cpu else "float16", "sampler": "euler"}

    # --- flow on the CPUs ---------------------------------------------------------------------------------
    pairs = clip_flow.previous_pairs(a.frames)
    workers = clip_flow.default_workers()
    seconds, _ = best_of(lambda: clip_flow.clip_flows(frames, pairs), a.repeats)
    one_thread, _ = best_of(lambda: clip_flow.clip_flows(frames, pairs, workers=1), 1)
    images = torch.from_numpy(frames).float() / 255
    t0 = time.perf_counter()
    flow = mapping["CFA_SourceFlow"].execute(images).args[0]
    node_seconds = time.perf_counter() - t0
    first_seconds, _ = best_of(lambda: clip_flow.clip_flows(frames, clip_flow.first_pairs(a.frames)), 1)
    report["flow"] = {"workers": workers, "seconds": seconds, "seconds_one_thread": one_thread,
                      "source_flow_node_first_call_seconds": node_seconds,
                      "first_frame_flows_seconds": first_seconds, "target_seconds": 2.0}
    print(f"flow: {seconds:.3f} s on {workers} workers ({one_thread:.3f} s on one); node {node_seconds:.3f} s",
          flush=True)

    # --- sampling with and without fusion -------------------------------------------------------------------
    device = torch.device("cpu" if cpu else "cuda")
    dtype = torch.float32 if cpu else torch.float16
    model = build_model(a.shape, device, dtype)
    positive, negative = conditioning(a.shape)
    latent = {"samples": torch.randn(a.frames, 4, px // 8, px // 8, generator=torch.Generator().manual_seed(2))}
    sampler, fusion_node = mapping["CFA_BatchVideoSampler"], mapping["CFA_FlowGuidedFusion"]
    defaults = fusion_core.FusionOptions()
    fused_model = fusion_node.execute(model, defaults.strength, defaults.start_percent, defaults.end_percent,
                                      defaults.anchor, defaults.occlusion_threshold, flow=flow).args[0]

    def video(m):
        return lambda: sampler.execute(m, positive, negative, latent, 1, a.steps, a.cfg, "euler", "normal", 1.0,
                                       0, "first+previous", False, "output", 0.0, 1.0, "auto", "auto",
                                       False).args[0]

    results, outputs = {}, {}
    for name, m in (("baseline", model), ("fused", fused_model), ("baseline_again", model)):
        results[name], outputs[name] = measure(video(m), a.repeats, cpu)
        print(f"{name:15s} {results[name]['seconds']:8.3f} s  peak {results[name]['peak_gib']:6.2f} GiB", flush=True)
    base = min(results["baseline"]["seconds"], results["baseline_again"]["seconds"])
    results["fused"]["vs_baseline"] = results["fused"]["seconds"] / base
    results["fused"]["max_abs_diff_vs_baseline"] = float((outputs["fused"] - outputs["baseline"]).abs().max())

    # --- the fusion by itself ---------------------------------------------------------------------------------
    latent_flow = flow.at_latent(px // 8, px // 8, defaults.occlusion_threshold, defaults.with_first, "bench")
    run = fusion_core.FusionRun(latent_flow, defaults.strength, defaults.with_first)
    denoised = torch.randn(a.frames, 4, px // 8, px // 8, device=device, dtype=dtype)

    def fuse_once():
        out = run.fuse(denoised)
        if not cpu:
            torch.cuda.synchronize()
        return out
    fuse_once()
    per_step, _ = best_of(fuse_once, max(3, a.repeats))
    results["fuse_only"] = {"seconds_per_step": per_step, "seconds_per_run": per_step * a.steps,
                            "share_of_baseline": per_step * a.steps / base, "target_share": 0.03}
    report["results"] = results
    write_report(report, a.json)


if __name__ == "__main__":
    main()

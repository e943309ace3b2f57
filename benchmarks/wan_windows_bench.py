"""Benchmark of Cross-Window Anchors on Wan inside ComfyUI 0.30.0: time and peak GPU memory of one long clip
sampled in core's context windows, with and without the anchors, in one process:

  - whole: plain sampling of the whole clip in one window (for reference: what windows save);
  - windows: core's Context Windows (Manual) along Wan's frame dimension -- the baseline of the ratios;
  - anchored: the same windows + Cross-Window Anchors (first+previous), anchors kept in pinned host memory
    (keep_anchors_on=cpu, the default);
  - anchored_gpu: the same, anchors kept on the GPU (keep_anchors_on=gpu).

Random weights (std 1/sqrt(fan_in), drawn on the GPU) in the shape of Wan 2.1 T2V 1.3B; nothing is downloaded.
Lengths are in latent frames (Wan: 4 video frames per latent frame after the first): 81 video frames = 21
latent frames, windows of 33 video frames = 9 latent frames, overlap 16 = 4 latent frames. Each scheme runs once
untimed with 2 steps (kernels, allocator), then --repeats times; the best time and the peak memory of the timed
runs are reported.

  COMFYUI_PATH=$HOME/.cache/cfa/ComfyUI-0.30.0 python benchmarks/wan_windows_bench.py --json wan.json
  (--shape tiny --cpu is a smoke run anywhere)
"""
from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_gpu_bench import build_comfy_model, measure, setup_comfy, write_report  # noqa: E402

SHAPES = {
    # Wan 2.1 T2V 1.3B: 30 blocks, 1536 wide, 12 heads, UMT5-XXL (4096) text of 512 tokens; 480x832 video is a
    # 60x104 latent, 2x2 patches: 1560 tokens per latent frame.
    "wan13b": dict(unet=dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=512,
                             in_dim=16, dim=1536, ffn_dim=8960, freq_dim=256, text_dim=4096, out_dim=16,
                             num_heads=12, num_layers=30, window_size=(-1, -1), qk_norm=True,
                             cross_attn_norm=True, eps=1e-6),
                   latent=(16, 60, 104), text=(512, 4096)),
    "tiny": dict(unet=dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=8, in_dim=16,
                           dim=64, ffn_dim=128, freq_dim=32, text_dim=32, out_dim=16, num_heads=4, num_layers=2,
                           window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6),
                 latent=(16, 8, 8), text=(8, 32)),
}


def core_windows(model, length: int, overlap: int, schedule: str):
    """Core's Context Windows (Manual) along dim 2 (Wan's latent frames); inputs differ between versions."""
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode
    kw = dict(model=model, context_length=length, context_overlap=overlap, context_schedule=schedule,
              context_stride=1, closed_loop=False, fuse_method="pyramid", dim=2)
    if "freenoise" in inspect.signature(ContextWindowsManualNode.execute).parameters:
        kw["freenoise"] = False
    return ContextWindowsManualNode.execute(**kw).args[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="wan13b", choices=sorted(SHAPES))
    ap.add_argument("--latent-frames", type=int, default=21, help="21 = 81 video frames")
    ap.add_argument("--window", type=int, default=9, help="latent frames per window (9 = 33 video frames)")
    ap.add_argument("--overlap", type=int, default=4, help="latent frames (4 = 16 video frames)")
    ap.add_argument("--schedule", default="standard_static", choices=["standard_static", "batched"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--schemes", default="whole,windows,anchored,anchored_gpu")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    cpu = a.cpu or not torch.cuda.is_available()
    comfy_nodes = setup_comfy(cpu)
    import comfy.latent_formats as lf
    import comfy.model_base as mb
    device = torch.device("cpu" if cpu else "cuda")
    dtype = torch.float32 if cpu else torch.bfloat16
    spec = SHAPES[a.shape]
    t0 = time.perf_counter()
    model = build_comfy_model(spec["unet"], lf.Wan21, mb.WAN21, device, dtype, weight_device=device)
    print(f"model built in {time.perf_counter() - t0:.1f} s", flush=True)
    g = torch.Generator().manual_seed(1)
    positive, negative = ([[torch.randn(1, *spec["text"], generator=g), {}]] for _ in range(2))
    c, h, w = spec["latent"]
    base = torch.randn(1, c, 1, h, w, generator=torch.Generator().manual_seed(2))
    drift = torch.randn(1, c, 1, h, w, generator=torch.Generator().manual_seed(3))
    latent = {"samples": torch.cat([base + 0.05 * k * drift for k in range(a.latent_frames)], dim=2)}
    anchors_node = comfy_nodes.NODE_CLASS_MAPPINGS["CFA_CrossWindowAnchors"]
    windowed = core_windows(model, a.window, a.overlap, a.schedule)
    anchored = {keep: anchors_node.execute(windowed, "first+previous", 0.0, 1.0, keep).args[0]
                for keep in ("cpu", "gpu")}

    def ksample(m):
        return lambda steps: comfy_nodes.common_ksampler(m, 1, steps, a.cfg, "euler", "simple", positive,
                                                         negative, latent)[0]

    schemes = {"whole": ksample(model), "windows": ksample(windowed), "anchored": ksample(anchored["cpu"]),
               "anchored_gpu": ksample(anchored["gpu"])}
    results, outputs = {}, {}
    for name in a.schemes.split(","):
        fn = schemes[name]
        results[name], outputs[name] = measure(lambda: fn(a.steps), a.repeats, cpu, warmup=lambda: fn(2))
        print(f"{name:10s} {results[name]['seconds']:8.3f} s  peak {results[name]['peak_gib']:6.2f} GiB", flush=True)
    base_name = "windows"
    for name, r in results.items():
        if base_name in results:
            r["vs_windows"] = r["seconds"] / results[base_name]["seconds"]
            r["peak_vs_windows"] = None if cpu else r["peak_gib"] / results[base_name]["peak_gib"]
    if "anchored" in outputs and "windows" in outputs:
        # how much the anchors move the clip (random weights: a sanity check that they act, not a quality figure)
        results["anchored"]["mean_abs_diff_vs_windows"] = float((outputs["anchored"] - outputs["windows"]).abs().mean())
    if "anchored" in outputs and "anchored_gpu" in outputs:   # where the anchors wait must not change the clip
        results["anchored"]["max_abs_diff_vs_anchored_gpu"] = float(
            (outputs["anchored"] - outputs["anchored_gpu"]).abs().max())
    if "anchored" in outputs:   # uploads served by a prefetch (all runs together, warm-up included)
        installed = sys.modules[anchors_node.__module__].installed   # the node module's own lookup
        host = installed(anchored["cpu"].model_options).anchors.kept
        results["anchored"]["prefetch_hits"] = host.prefetch_hits
        results["anchored"]["prefetch_misses"] = host.prefetch_misses
    tokens = h * w // 4
    kept = 2 * 2 * tokens * spec["unet"]["dim"] * spec["unet"]["num_layers"] * (2 if a.cfg != 1 else 1) * \
        torch.finfo(dtype).bits // 8
    report = {"device": torch.cuda.get_device_name() if not cpu else "cpu", "torch": torch.__version__,
              "shape": a.shape, "latent": [c, a.latent_frames, h, w], "window": a.window, "overlap": a.overlap,
              "schedule": a.schedule, "steps": a.steps, "cfg": a.cfg, "dtype": str(dtype),
              "sampler": "euler/simple", "anchor_bytes_kept_estimate": kept,
              "output_scale": float(outputs[next(iter(outputs))].abs().max()), "results": results}
    write_report(report, a.json)


if __name__ == "__main__":
    main()

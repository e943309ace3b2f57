"""The quality table: what each setting of the pack does to real clips the trained model never saw.

Edits the held-out clips (carphone, vtest, tree; 24 frames each) with the trained small model of
tests/fixtures/trained/ through the pack's ComfyUI nodes, in-process, at two denoise levels and one seed, and
scores every result (tests/footage/cfa_quality.py says how). `--sweep` adds the defaults study: blocks presets,
step ranges, anchors and fusion strength on every clip at one denoise level.

    COMFYUI_PATH=~/ComfyUI python benchmarks/quality/quality_table.py --json benchmarks/results/quality_cpu.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "footage"))

import torch  # noqa: E402

import cfa_quality as q  # noqa: E402
import cfa_trained_model  # noqa: E402

# name -> (Batch Video Sampler overrides, fusion overrides or None): the defaults study (--sweep)
SWEEP = {
    "blocks=output (default)": ({}, None),
    "blocks=input+output": ({"blocks": "input+output"}, None),
    "blocks=input+middle+output": ({"blocks": "input+middle+output"}, None),
    "anchors=previous": ({"anchors": "previous"}, None),
    "anchors=first": ({"anchors": "first"}, None),
    "include_self": ({"include_self": True}, None),
    "steps 0-50%": ({"end_percent": 0.5}, None),
    "steps 50-100%": ({"start_percent": 0.5}, None),
    "fusion strength 0.25": ({}, {"strength": 0.25}),
    "fusion strength 0.5": ({}, {"strength": 0.5}),
    "fusion strength 0.75": ({}, {"strength": 0.75}),
    "fusion strength 1.0": ({}, {"strength": 1.0}),
    "fusion steps 0-90%": ({}, {"end_percent": 0.9}),
    "fusion steps 0-75%": ({}, {"end_percent": 0.75}),
    "fusion steps 0-50%": ({}, {"end_percent": 0.5}),
    "fusion anchor previous+first": ({}, {"anchor": "previous+first"}),
}


def markdown(out: dict) -> str:
    """The table (and the defaults study) as markdown, ratios against the plain edit of the same clip and denoise."""
    plain = {(r["clip"], r["denoise"]): r for r in out["rows"] if r["setting"] == "plain"}
    names = {name: what for name, (what, _, _) in q.SETTINGS.items()}
    lines = ["| clip | denoise | setting | warp error | vs plain | flicker | PSNR / SSIM vs source | "
             "PSNR vs plain edit | detail vs plain | ms per frame |", "|---" * 10 + "|"]
    for r in out["rows"]:
        p = plain[(r["clip"], r["denoise"])]
        vs_plain = "—" if r["setting"] == "plain" else f"{r['psnr_plain']:.1f} dB"
        lines.append(f"| {r['clip']} | {r['denoise']} | {names.get(r['setting'], r['setting'])} | "
                     f"{r['warp_error']:.2f} | **{r['warp_error'] / p['warp_error']:.2f}×** | {r['flicker']:.2f} | "
                     f"{r['psnr_source']:.2f} dB / {r['ssim_source']:.3f} | {vs_plain} | "
                     f"{r['detail'] / p['detail']:.2f} | {1000 * r['seconds_per_frame']:.1f} |")
    if out["sweep"]:
        lines += ["", "| clip | setting (denoise " + str(out["sweep"][0]["denoise"]) + ") | warp error vs plain | "
                  "flicker vs plain | PSNR vs source, change | detail vs plain |", "|---" * 6 + "|"]
        for r in out["sweep"]:
            p = plain[(r["clip"], r["denoise"])]
            lines.append(f"| {r['clip']} | {r['setting']} | {r['warp_error'] / p['warp_error']:.2f}× | "
                         f"{r['flicker'] / p['flicker']:.2f}× | {r['psnr_source'] - p['psnr_source']:+.2f} dB | "
                         f"{r['detail'] / p['detail']:.2f} |")
    return "\n".join(lines)


def load_comfy(comfyui: str):
    sys.path.insert(0, comfyui)
    from comfy.cli_args import args
    args.cpu = not torch.cuda.is_available()
    import nodes as comfy_nodes  # ComfyUI's nodes.py

    assert asyncio.run(comfy_nodes.load_custom_node(str(REPO), module_parent="custom_nodes"))
    return comfy_nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", ""))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--denoise", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--clips", nargs="+", default=list(q.HELD_OUT))
    parser.add_argument("--settings", nargs="+", default=list(q.SETTINGS))
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--sweep-denoise", type=float, default=0.75)
    parser.add_argument("--markdown-from", type=Path, help="print the tables of an earlier run's JSON and stop")
    args = parser.parse_args()
    if args.markdown_from:
        print(markdown(json.loads(args.markdown_from.read_text())))
        return
    if not args.comfyui:
        raise SystemExit("set --comfyui or COMFYUI_PATH to a ComfyUI checkout")
    if not args.json:
        raise SystemExit("--json: where to write the figures")
    comfy_nodes = load_comfy(args.comfyui)
    import comfyui_version

    mapping = comfy_nodes.NODE_CLASS_MAPPINGS
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = cfa_trained_model.comfy_model(device=device)
    vae = cfa_trained_model.comfy_vae()
    out = {"machine": {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
                       "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                       "comfyui": comfyui_version.__version__},
           "frames": args.frames, "steps": args.steps, "sampling": q.SAMPLING,
           "model": cfa_trained_model.read_metadata(), "rows": [], "sweep": []}

    def run(clip, frames, denoise, setting, plain, label=None, bvs=None, fusion=None):
        result, seconds = q.edit(comfy_nodes, mapping, model, vae, frames, setting, denoise, args.steps,
                                 sampler_overrides=bvs, fusion_overrides=fusion)
        row = {"clip": clip, "denoise": denoise, "setting": label or setting,
               "seconds_per_frame": seconds / len(frames), **q.score(result, frames, plain)}
        print(json.dumps(row), flush=True)
        return result, row

    # one untimed edit first, so no row pays for kernel loading and warm-up
    q.edit(comfy_nodes, mapping, model, vae, q.held_out_clip(args.clips[0], 4), "bvs_fusion", 0.5, 2)
    started = time.time()
    for clip in args.clips:
        frames = q.held_out_clip(clip, args.frames)
        for denoise in args.denoise:
            plain, row = run(clip, frames, denoise, "plain", None)
            out["rows"].append(row)
            for setting in args.settings:
                if setting != "plain":
                    out["rows"].append(run(clip, frames, denoise, setting, plain)[1])
            args.json.write_text(json.dumps(out, indent=1))
        if args.sweep:
            plain, _ = run(clip, frames, args.sweep_denoise, "plain", None)
            for label, (bvs, fusion) in SWEEP.items():
                setting = "bvs" if fusion is None else "bvs_fusion"
                out["sweep"].append(run(clip, frames, args.sweep_denoise, setting, plain, label, bvs, fusion)[1])
            args.json.write_text(json.dumps(out, indent=1))
    out["seconds"] = round(time.time() - started, 1)
    args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

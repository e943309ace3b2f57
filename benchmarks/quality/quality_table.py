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
}


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
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--denoise", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--clips", nargs="+", default=list(q.HELD_OUT))
    parser.add_argument("--settings", nargs="+", default=list(q.SETTINGS))
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--sweep-denoise", type=float, default=0.75)
    args = parser.parse_args()
    if not args.comfyui:
        raise SystemExit("set --comfyui or COMFYUI_PATH to a ComfyUI checkout")
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

"""README's before/after figure: a held-out clip, edited by the trained small model without and with the pack.

Rows: source / plain edit (KSampler over the batch) / Batch Video Sampler / Batch Video Sampler + Flow Guided
Fusion; columns: every `--every`-th frame. Also an animated WebP of the four side by side (kept under 2 MB).

    COMFYUI_PATH=~/ComfyUI python benchmarks/quality/before_after.py --out docs/trained_before_after
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_table import REPO, load_comfy  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "footage"))
import cfa_quality as q  # noqa: E402
import cfa_trained_model  # noqa: E402

ROWS = (("source", None), ("plain edit", "plain"), ("Batch Video Sampler", "bvs"),
        ("+ Flow Guided Fusion", "bvs_fusion"))
LABEL_W = 150


def labelled(row_images: list, label: str) -> Image.Image:
    h = row_images[0].height
    strip = Image.new("RGB", (LABEL_W + sum(i.width for i in row_images) + 4 * len(row_images), h + 4), "white")
    ImageDraw.Draw(strip).text((6, h // 2 - 6), label, fill="black")
    x = LABEL_W
    for image in row_images:
        strip.paste(image, (x, 2))
        x += image.width + 4
    return strip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", default=None)
    parser.add_argument("--out", type=Path, required=True, help="path stem: writes <stem>.png and <stem>.webp")
    parser.add_argument("--clip", default="carphone")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--denoise", type=float, default=0.75)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    import os

    comfy_nodes = load_comfy(args.comfyui or os.environ["COMFYUI_PATH"])
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, vae = cfa_trained_model.comfy_model(device=device), cfa_trained_model.comfy_vae()
    source = q.held_out_clip(args.clip, args.frames)
    clips = {}
    for label, setting in ROWS:
        clips[label] = source if setting is None else q.edit(comfy_nodes, comfy_nodes.NODE_CLASS_MAPPINGS, model,
                                                             vae, source, setting, args.denoise, args.steps)[0]
    picks = range(0, args.frames, args.every)
    rows = [labelled([Image.fromarray(clips[label][t]) for t in picks], label) for label, _ in ROWS]
    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out.with_suffix(".png"), optimize=True)

    # animation: the four clips side by side, captioned once
    h, w = source.shape[1:3]
    frames = []
    for t in range(args.frames):
        canvas = Image.new("RGB", (4 * w + 12, h + 16), "white")
        for k, (label, _) in enumerate(ROWS):
            canvas.paste(Image.fromarray(clips[label][t]), (k * (w + 4), 16))
            ImageDraw.Draw(canvas).text((k * (w + 4) + 2, 2), label, fill="black")
        frames.append(canvas)
    frames[0].save(args.out.with_suffix(".webp"), save_all=True, append_images=frames[1:], duration=120, loop=0,
                   quality=80)
    for suffix in (".png", ".webp"):
        size = args.out.with_suffix(suffix).stat().st_size
        print(f"{args.out.with_suffix(suffix)}: {size / 1e6:.2f} MB")
        if suffix == ".webp" and size > 2e6:
            raise SystemExit("the animated preview is over 2 MB: use fewer --frames")


if __name__ == "__main__":
    main()

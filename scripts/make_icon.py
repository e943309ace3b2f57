"""Draws docs/icon.png, the pack's icon in the Comfy Registry ([tool.comfy] Icon in pyproject.toml).

Three frames of one clip side by side (the same scene, a ball moving through it). Arcs above: every later
frame attends to frame 0's keys and values (orange); arcs below: each frame also attends to the frame before it
(teal). That is the method in one picture: cross-frame self-attention with K/V from the first and previous frame.

Drawn at 4x and downsampled (antialiasing), then reduced to a small palette so the file stays a few KB.
Usage: python scripts/make_icon.py [--out docs/icon.png] [--size 400]
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SCALE = 4  # supersampling factor

BACKGROUND = (22, 27, 44)
FRAME_EDGE = (236, 239, 244)
FIRST_EDGE = (255, 159, 28)  # frame 0 and the arcs to it
PREVIOUS = (46, 196, 182)  # the arcs to the previous frame
SKY_TOP, SKY_BOTTOM = (92, 140, 214), (170, 205, 240)
HILL = (63, 125, 88)
SUN = (255, 214, 102)
BALL = (231, 76, 60)


def _vertical_gradient(draw, box, top, bottom):
    x0, y0, x1, y1 = box
    for y in range(y0, y1):
        t = (y - y0) / max(1, y1 - y0 - 1)
        draw.line([(x0, y), (x1 - 1, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))


def _frame(img, box, index, edge, edge_width):
    """One video frame: sky, sun, a hill, and a ball that has moved `index` steps to the right."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    inner = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(inner)
    _vertical_gradient(d, (0, 0, w, h), SKY_TOP, SKY_BOTTOM)
    d.ellipse([w * 0.7, h * 0.1, w * 0.88, h * 0.1 + w * 0.18], fill=SUN)
    d.ellipse([-w * 0.35, h * 0.58, w * 0.75, h * 1.6], fill=HILL)
    d.ellipse([w * 0.45, h * 0.66, w * 1.4, h * 1.7], fill=tuple(c - 14 for c in HILL))
    cx, cy, r = w * (0.2 + 0.24 * index), h * (0.6 - 0.05 * index), w * 0.09
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=BALL)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, w - 1, h - 1], radius=w // 12, fill=255)
    img.paste(inner, (x0, y0), mask)
    ImageDraw.Draw(img).rounded_rectangle(box, radius=w // 12, outline=edge, width=edge_width)


def _arc(draw, start, end, height, colour, width, head):
    """A half-ellipse from start to end bulging by `height` (negative: upwards), arrowhead at end."""
    (xs, ys), (xe, _) = start, end
    cx, rx = (xs + xe) / 2, abs(xe - xs) / 2
    pts = [(cx - rx * math.cos(t), ys + height * math.sin(t)) for t in (math.pi * k / 64 for k in range(65))]
    draw.line(pts, fill=colour, width=width, joint="curve")
    # arrowhead pointing along the curve's last segment, into the target frame
    (px, py), (qx, qy) = pts[-4], pts[-1]
    ang = math.atan2(qy - py, qx - px)
    tip = (qx + math.cos(ang) * head * 0.4, qy + math.sin(ang) * head * 0.4)
    left = (tip[0] - head * math.cos(ang - 0.5), tip[1] - head * math.sin(ang - 0.5))
    right = (tip[0] - head * math.cos(ang + 0.5), tip[1] - head * math.sin(ang + 0.5))
    draw.polygon([tip, left, right], fill=colour)


def draw_icon(size: int) -> Image.Image:
    s = size * SCALE
    img = Image.new("RGB", (s, s), BACKGROUND)
    draw = ImageDraw.Draw(img)
    margin, gap = round(s * 0.05), round(s * 0.05)
    fw = (s - 2 * margin - 2 * gap) // 3
    fh = round(fw * 0.78)
    top = (s - fh) // 2
    boxes = [(margin + i * (fw + gap), top, margin + i * (fw + gap) + fw, top + fh) for i in range(3)]
    line, head = round(s * 0.018), round(s * 0.05)
    # arcs first, so the frames sit on top of their ends
    centre = [(b[0] + b[2]) / 2 for b in boxes]
    off = fw * 0.18  # arcs leave right of a frame's centre and arrive left of it, so no two ends meet
    for i, start, height in ((1, centre[0] + off, -s * 0.15), (2, centre[0] - off, -s * 0.27)):
        _arc(draw, (start, top - line), (centre[i] - off * (i == 1), top), height, FIRST_EDGE, line, head)
    for i in (1, 2):
        _arc(draw, (centre[i - 1] + off, top + fh + line), (centre[i] - off, top + fh), s * 0.12, PREVIOUS,
             line, head)
    for i, box in enumerate(boxes):
        first = i == 0
        _frame(img, box, i, FIRST_EDGE if first else FRAME_EDGE, round(s * (0.016 if first else 0.01)))
    img = img.resize((size, size), Image.LANCZOS)
    return img.quantize(colors=64, method=Image.MEDIANCUT, dither=Image.Dither.NONE)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "icon.png"))
    ap.add_argument("--size", type=int, default=400)
    a = ap.parse_args(argv)
    draw_icon(a.size).save(a.out, optimize=True)
    print(f"wrote {a.out} ({Path(a.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()

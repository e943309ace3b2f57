"""The report as a picture: three panels of per-frame curves, result against source, drawn by matplotlib's
Agg renderer (no display, no pyplot global state, safe in a server thread)."""
from __future__ import annotations

import math
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .metrics import ConsistencyReport

RESULT_STYLE = dict(color="#d1495b", linewidth=1.6)
SOURCE_STYLE = dict(color="#30638e", linewidth=1.2, linestyle="--")


def _series(values):
    """None (frame 0, or no trusted pixel) becomes a gap in the line."""
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def _fmt(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_plot(report: ConsistencyReport, title: str = "", width: int = 1024, height: int = 768) -> np.ndarray:
    """H x W x 3 uint8 RGB image of the report."""
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 1, sharex=True)
    summary = report.summary()
    r, s = summary["result"], summary["source"]
    x = np.arange(report.frames)
    masked = "trusted pixels" if report.masked else "all pixels"
    panels = [
        ("warp_error", f"warp error\n(0-255, {masked})",
         lambda q: f"mean {_fmt(q['warp_error_mean'])}, max {_fmt(q['warp_error_max'])} "
                   f"@ frame {q['warp_error_worst_frame']}"),
        ("flicker", "brightness flicker\n|Δ mean luma|",
         lambda q: f"mean {_fmt(q['flicker_mean'])}, max {_fmt(q['flicker_max'])} "
                   f"@ frame {q['flicker_worst_frame']}"),
        ("drift", "colour drift\nfrom frame 0",
         lambda q: f"final {_fmt(q['drift_final'], 1)}, max {_fmt(q['drift_max'], 1)}"),
    ]
    for ax, (key, ylabel, legend) in zip(axes, panels):
        ax.plot(x, _series(getattr(report.result, key)), label=f"result: {legend(r)}", **RESULT_STYLE)
        if report.source is not None:
            ax.plot(x, _series(getattr(report.source, key)), label=f"source: {legend(s)}", **SOURCE_STYLE)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    axes[-1].set_xlabel("frame")
    axes[-1].set_xlim(0, max(report.frames - 1, 1))
    ratio = summary["warp_error_ratio"]
    headline = title.strip() or "Temporal consistency"
    if ratio is not None:
        headline += f" — warp error {ratio:.2f}x the source's"
    fig.suptitle(headline, fontsize=12, y=0.995)
    # The node's one-line summary, verbatim, so it is on the node's face in every frontend (ComfyUI's
    # frontend prints a node's text output only on its own text nodes).
    fig.text(0.5, 0.955, "\n".join(textwrap.wrap(report.summary_line(), width=150)), ha="center", va="top",
             fontsize=8, color="#333333")
    fig.text(0.5, 0.005, f"{report.frames} frames {report.width}x{report.height}; flow: {report.flow_method} "
                         f"on the {report.flow_on}; "
                         + ("occluded pixels masked (forward-backward check)" if report.masked
                            else "no occlusion mask"),
             ha="center", va="bottom", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.025, 1, 0.93))
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

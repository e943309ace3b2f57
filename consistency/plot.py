"""The report as a picture: four panels of per-frame curves (warp error, brightness flicker, luma drift and
colour drift from frame 0), result against source, window joins marked by vertical lines; drawn by
matplotlib's Agg renderer (no display, no pyplot global state, safe in a server thread)."""
from __future__ import annotations

import math
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .metrics import JOIN_LABELS, ConsistencyReport

RESULT_STYLE = dict(color="#d1495b", linewidth=1.6)
SOURCE_STYLE = dict(color="#30638e", linewidth=1.2, linestyle="--")
# Window joins: solid and 2 px wide so they stay visible (and testable) on the rendered image; overlap spans
# shaded in a paler tint of the same colour.
JOIN_STYLE = dict(color="#2a9d8f", linewidth=2.0, zorder=0)
JOIN_SPAN_STYLE = dict(color="#2a9d8f", alpha=0.12, linewidth=0, zorder=0)


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
    axes = fig.subplots(4, 1, sharex=True)
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
        ("luma_drift", "luma drift from\nframe 0 (Rec.709)",
         lambda q: f"final {_fmt(q['luma_drift_final'], 1)}, furthest {_fmt(q['luma_drift_extreme'], 1)}"),
        ("chroma_drift", "colour drift from\nframe 0 (ΔE a*b*)",
         lambda q: f"final {_fmt(q['chroma_drift_final'], 1)}, max {_fmt(q['chroma_drift_max'], 1)}"),
    ]
    joins = report.joins["spans"] if report.joins else []
    for ax, (key, ylabel, legend) in zip(axes, panels):
        for start, end in joins:
            ax.axvline(start, **JOIN_STYLE)
            if end > start:  # overlapping windows: the cross-fade, up to the first frame the old one leaves
                ax.axvspan(start, end, **JOIN_SPAN_STYLE)
        ax.plot(x, _series(getattr(report.result, key)), label=f"result: {legend(r)}", **RESULT_STYLE)
        if report.source is not None:
            ax.plot(x, _series(getattr(report.source, key)), label=f"source: {legend(s)}", **SOURCE_STYLE)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(True, alpha=0.3)
        if key == "luma_drift":  # signed: darker below the zero line, brighter above
            ax.axhline(0, color="#888888", linewidth=0.8)
        else:
            ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
    if joins:
        worst = summary["worst_join"]
        axes[0].set_title(f"vertical lines: {len(joins)} window join(s)"
                          + (f"; worst at frame {worst['frame']}: {worst['ratio']:.1f}x the change per frame pair "
                             f"inside windows "
                             f"({JOIN_LABELS[worst['measure']]})" if worst else ""), fontsize=8, loc="right")
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

"""Temporal-consistency measurement of a frame sequence (numpy, OpenCV and torch only; no ComfyUI).

`measure_consistency` scores how much a clip flickers: per frame, the error left after warping the previous
frame onto it along the optical flow (occlusions masked), the change of mean brightness, and the drift of the
mean colour from the first frame, luma and colour drift from it (drift.py); with the source clip given, the same
figures for the source, for scale; with context-window joins given, the jump at each join (joins.py).
`render_plot` draws the report with matplotlib. The ComfyUI node lives in nodes/measure_consistency.py.
"""
from . import drift, joins
from .flow import DisFlow, FlowFunction, RaftLikeFlow
from .metrics import ConsistencyReport, SequenceCurves, measure_consistency, to_uint8_frames

__all__ = ["ConsistencyReport", "DisFlow", "drift", "joins", "FlowFunction", "RaftLikeFlow", "SequenceCurves",
           "measure_consistency", "render_plot", "to_uint8_frames"]


def render_plot(report, title: str = "", width: int = 1024, height: int = 768):
    """Imported on use: matplotlib costs a noticeable import time that loading the pack should not pay."""
    from .plot import render_plot as _render
    return _render(report, title=title, width=width, height=height)

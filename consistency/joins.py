"""Where context windows join, and how big the change is there compared with inside the windows.

A sampler that runs a long clip in context windows (ComfyUI's "Context Windows (Manual)") denoises each
window on its own and blends the overlaps; where one window hands over to the next, colour and identity can
jump. The windows are placed the way core's fixed schedules place them (core: comfy/context_windows.py):
- "standard_static": a window every (length - overlap) frames; the window that would run past the end is
  moved back so that it ends on the last frame (it then overlaps its predecessor by more);
- "batched": back-to-back windows of `length`, no overlap (overlap is ignored), the last one shorter.
The uniform and looped schedules move their windows from step to step, so they have no fixed joins.

A join spans the frames where both windows count: from the first frame of the new window to the first frame
the previous window no longer covers (one frame pair without overlap). Its jump is the change across that
span: for a per-frame level (mean luma, mean colour) the change from the frame before the span to its last
frame, i.e. the whole cross-fade; for a per-pair score (warp error) the largest pair in the span. Each jump
is compared with the median of the same measure over equally long stretches that lie inside windows (no
join pair in them): the ratio says how many times the usual change the join is.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

SCHEDULES = ("standard_static", "batched")


class JoinSpan(NamedTuple):
    """Frame pairs (t - 1, t) for start <= t <= end belong to the join (video frames)."""
    start: int
    end: int


def context_windows(frames: int, length: int, overlap: int = 0, schedule: str = "standard_static") -> list:
    """The windows (ranges of frame indices) a fixed core schedule makes for `frames` frames."""
    if length < 1:
        raise ValueError(f"the window length must be at least 1 frame, got {length}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown window schedule {schedule!r}: fixed joins exist for {', '.join(SCHEDULES)} "
                         "only (the uniform and looped schedules move their windows every step)")
    if frames <= length:
        return [range(frames)]
    if schedule == "batched":
        return [range(s, min(s + length, frames)) for s in range(0, frames, length)]
    if not 0 <= overlap < length:
        raise ValueError(f"the window overlap ({overlap}) must be at least 0 and less than the window length "
                         f"({length})")
    windows, start = [], 0
    while True:
        if start + length >= frames:  # the last window: moved back to end exactly on the last frame
            windows.append(range(frames - length, frames))
            return windows
        windows.append(range(start, start + length))
        start += length - overlap


def latent_to_video_start(latent: int, temporal_scale: int) -> int:
    """First video frame of a latent frame. Video VAEs such as Wan's code frame 0 alone and then `scale`
    frames per latent frame: latent j >= 1 holds video frames scale*(j-1)+1 .. scale*j."""
    return 0 if latent == 0 else 1 + temporal_scale * (latent - 1)


def latent_frames_for(video_frames: int, temporal_scale: int) -> int:
    """Latent frames that hold `video_frames` frames (Wan: 81 frames -> 21 latents)."""
    return 1 + math.ceil((video_frames - 1) / temporal_scale)


def window_joins(video_frames: int, length: int, overlap: int = 0, schedule: str = "standard_static",
                 temporal_scale: int = 1) -> list:
    """JoinSpans in video frames for windows of `length` and `overlap` counted in latent frames (as in core's
    Context Windows (Manual)); temporal_scale is video frames per latent frame (1: an image model, 4: Wan).
    length 0: no windows, no joins."""
    if length == 0:
        return []
    if temporal_scale < 1:
        raise ValueError(f"the latent temporal scale must be at least 1, got {temporal_scale}")
    windows = context_windows(latent_frames_for(video_frames, temporal_scale), length, overlap, schedule)
    last = video_frames - 1
    return [JoinSpan(min(latent_to_video_start(new.start, temporal_scale), last),
                     min(latent_to_video_start(previous.stop, temporal_scale), last))
            for previous, new in zip(windows, windows[1:])]


def as_spans(joins: Sequence, frames: int) -> list:
    """JoinSpans from ints (a join of one frame pair at that frame) or (start, end) pairs, checked."""
    spans = []
    for j in joins:
        span = JoinSpan(int(j), int(j)) if isinstance(j, (int, np.integer)) else JoinSpan(int(j[0]), int(j[1]))
        if not 1 <= span.start <= span.end <= frames - 1:
            raise ValueError(f"a window join must lie between frame 1 and the last frame ({frames - 1}), start "
                             f"<= end; got frames {span.start}..{span.end}")
        spans.append(span)
    return spans


def _inside_starts(frames: int, spans: list, pairs: int) -> list:
    """Frames i where the stretch i .. i + pairs holds no join pair (all its pairs lie inside windows)."""
    at_join = np.zeros(frames, dtype=bool)
    for s in spans:
        at_join[s.start:s.end + 1] = True
    return [i for i in range(frames - pairs) if not at_join[i + 1:i + pairs + 1].any()]


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(values)) if values else None


def _ratio(jump, inside) -> Optional[float]:
    # Nothing inside to compare with, or a perfectly still inside (a synthetic clip): no ratio.
    if jump is None or inside is None or inside < 1e-9:
        return None
    return float(jump / inside)


def level_change(levels: np.ndarray, distance: Callable) -> Callable:
    """Change of a per-frame level between frames i and j."""
    return lambda i, j: float(distance(levels[j], levels[i]))


def pair_peak(pair_scores: Sequence) -> Callable:
    """Largest per-pair score over the pairs (i, i+1) .. (j-1, j); None where there is none (frame 0, NaN)."""
    def peak(i, j):
        values = [v for v in pair_scores[i + 1:j + 1] if v is not None and math.isfinite(v)]
        return max(values) if values else None
    return peak


def join_jumps(measures: dict, frames: int, spans: list) -> tuple[list, dict]:
    """Per join: {"frame", "span", "<name>_jump", "<name>_ratio"} for each measure (name -> change(i, j),
    the change from frame i to frame j); and the inside-window median of each measure for one frame pair."""
    result = []
    inside_cache = {}

    def inside(name, pairs):
        if (name, pairs) not in inside_cache:
            change = measures[name]
            inside_cache[name, pairs] = _median(change(i, i + pairs) for i in _inside_starts(frames, spans, pairs))
        return inside_cache[name, pairs]

    for span in spans:
        pairs = span.end - span.start + 1
        row = {"frame": span.start, "span": [span.start, span.end]}
        for name, change in measures.items():
            jump = change(span.start - 1, span.end)
            row[f"{name}_jump"] = jump
            row[f"{name}_ratio"] = _ratio(jump, inside(name, pairs))
        result.append(row)
    return result, {name: inside(name, 1) for name in measures}

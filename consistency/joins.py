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
frame, i.e. the whole cross-fade; for a per-pair score (warp error) the mean over the span's pairs.

The jump is compared per frame pair, because a cross-fade can be longer than any stretch without a join (Wan's
wan_long_video example: 81 frames, windows of 9 latents overlapping 4, joins 17 and 29 frame pairs long, the
longest stretch without a join 16): the join's change per pair (a level's jump divided by the span's pairs;
a score's mean already is one) against the median of one frame pair "inside", i.e. outside every join span.
For core's placements those are the pairs whose two frames one and the same window alone covers (no blend).
Both fixed schedules leave such pairs at every setting with several video frames per latent (the last latent
is the last window's alone); with one latent per frame they can be missing (windows that advance one frame
at a time, a clip one frame longer than a window): then there is no ratio.
The uniform and looped schedules move their windows every step, so no frame is a join or inside for good.
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


def inside_pairs(frames: int, spans: list) -> list:
    """The frames t whose pair (t - 1, t) lies outside every join span: inside one window, unblended."""
    at_join = np.zeros(frames, dtype=bool)
    for s in spans:
        at_join[s.start:s.end + 1] = True
    return [t for t in range(1, frames) if not at_join[t]]


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(values)) if values else None


def _ratio(per_pair, inside) -> Optional[float]:
    # Nothing inside to compare with, or a perfectly still inside (a synthetic clip): no ratio.
    if per_pair is None or inside is None or inside < 1e-9:
        return None
    return float(per_pair / inside)


class JoinMeasure(NamedTuple):
    """change(i, j): the jump from frame i to frame j; per_pair(i, j): the same change per frame pair."""
    change: Callable
    per_pair: Callable


def level_change(levels: np.ndarray, distance: Callable) -> JoinMeasure:
    """Change of a per-frame level between frames i and j; per pair: that change over the j - i pairs."""
    def change(i, j):
        return float(distance(levels[j], levels[i]))
    return JoinMeasure(change, lambda i, j: change(i, j) / (j - i))


def pair_mean(pair_scores: Sequence) -> JoinMeasure:
    """Mean of a per-pair score over the pairs (i, i+1) .. (j-1, j) (already per pair); None where there is none
    (frame 0, NaN: a pair without any trusted pixel)."""
    def mean(i, j):
        values = [v for v in pair_scores[i + 1:j + 1] if v is not None and math.isfinite(v)]
        return float(np.mean(values)) if values else None
    return JoinMeasure(mean, mean)


def join_jumps(measures: dict, frames: int, spans: list) -> tuple[list, dict]:
    """Per join: {"frame", "span", "pairs", "<name>_jump", "<name>_ratio"} for each measure (name -> JoinMeasure);
    and the inside median of each measure for one frame pair (None where no pair lies inside)."""
    inside_at = inside_pairs(frames, spans)
    inside = {name: _median(m.per_pair(t - 1, t) for t in inside_at) for name, m in measures.items()}
    result = []
    for span in spans:
        row = {"frame": span.start, "span": [span.start, span.end], "pairs": span.end - span.start + 1}
        for name, m in measures.items():
            row[f"{name}_jump"] = m.change(span.start - 1, span.end)
            row[f"{name}_ratio"] = _ratio(m.per_pair(span.start - 1, span.end), inside[name])
        result.append(row)
    return result, inside

"""The per-frame anchor policy: which frames frame i of a clip attends to, in one place for every front end.

Frame i attends to (as options.anchors chooses):
- its *first* anchor: the run's reference (a stored reference, or the anchor of the clip a continuation
  continues) when it has one, else clip frame 0. With keyframes (anchor_every = N > 0) frames from N on take
  the latest keyframe k*N (k = i // N) instead; frames 0..N-1 keep frame 0 or the reference;
- its *previous* frame: frame i-1; for clip frame 0, the frame before the clip (the last frame of the clip a
  continuation continues) when the run has one, else frame 0's first anchor (attention over [f0; f0] is f0's
  plain self-attention).

A model call holds the whole clip or one window [start, stop) of it (the windows of one model evaluation run
in clip order). `AnchorPolicy.window` says where each anchor of the window's frames comes from, as a *source*:
  an int f >= 0: clip frame f (in the window when start <= f < stop, else carried from an earlier window of the
      same evaluation, see windows.WindowCarry);
  REFERENCE: the run's `first` bank;  BEFORE: the run's `prev` bank;
and which of the window's frames later windows of the same evaluation read (what the carry keeps).
"""
from __future__ import annotations

from dataclasses import dataclass

from .options import CrossFrameOptions

REFERENCE = "reference"   # the run's recorded anchor (RunPlan.first)
BEFORE = "before"         # the run's recorded frame before the clip (RunPlan.prev)


def keyframe_of(frame: int, every: int) -> int:
    """The latest keyframe at or before `frame` when keyframes are every `every` frames (0 = only frame 0)."""
    return 0 if every <= 0 else (frame // every) * every


@dataclass(frozen=True)
class WindowAnchors:
    """Where the anchors of the frames of one window [start, stop) come from (sources: see the module).

    first: ((lo, hi, source), ...): window frames lo..hi-1 (relative to start) take that first anchor; empty
        when the first anchor is not used.
    prev0: the source of the window's first frame's previous frame; None when the previous frame is not used
        (later frames of the window take the frame before them in the window).
    carry_anchor / carry_key: the clip frame of this window that later windows read as their first anchor
        (frame 0 / the newest keyframe), or None.
    carry_last: later windows read this window's last frame as their previous frame.
    """

    first: tuple
    prev0: object
    carry_anchor: int | None
    carry_key: int | None
    carry_last: bool


class AnchorPolicy:
    """The anchors of a clip of `n_frames` under `options`; has_reference / has_before: whether the run has a
    recorded first anchor (REFERENCE) / a recorded frame before the clip (BEFORE)."""

    def __init__(self, options: CrossFrameOptions, n_frames: int, has_reference: bool = False,
                 has_before: bool = False):
        self.options = options
        self.n_frames = n_frames
        self.every = options.anchor_every
        self.has_reference = has_reference
        self.has_before = has_before
        self._windows: dict[tuple[int, int], WindowAnchors] = {}

    def first_of(self, frame: int):
        """The source of clip frame `frame`'s first anchor."""
        key = keyframe_of(frame, self.every)
        return REFERENCE if key == 0 and self.has_reference else key

    def previous_of(self, frame: int):
        """The source of clip frame `frame`'s previous frame."""
        if frame > 0:
            return frame - 1
        return BEFORE if self.has_before else self.first_of(0)

    def continuation_anchor(self) -> int:
        """The clip frame a continuation of this clip anchors on: its latest keyframe (frame 0 without)."""
        return keyframe_of(self.n_frames - 1, self.every)

    def window(self, start: int, stop: int) -> WindowAnchors:
        """The anchors of window [start, stop) (the whole clip: 0, n_frames); computed once per window."""
        found = self._windows.get((start, stop))
        if found is None:
            found = self._windows[(start, stop)] = self._plan_window(start, stop)
        return found

    def _plan_window(self, start: int, stop: int) -> WindowAnchors:
        opts, every = self.options, self.every
        first = ()
        if opts.uses_first:
            if every:
                keys = range(keyframe_of(start, every), stop, every)
                first = tuple((max(start, key) - start, min(stop, key + every) - start, self.first_of(key))
                              for key in keys)
            else:
                first = ((0, stop - start, self.first_of(start)),)
        prev0 = self.previous_of(start) if opts.uses_previous else None
        later = stop < self.n_frames           # later windows of the evaluation read from this one
        keeps_first = later and opts.uses_first
        newest_key = keyframe_of(stop - 1, every)
        return WindowAnchors(
            first=first, prev0=prev0,
            carry_anchor=0 if keeps_first and start == 0 and not self.has_reference else None,
            carry_key=newest_key if keeps_first and 0 < newest_key and newest_key >= start else None,
            carry_last=later and opts.uses_previous)

"""Windows of one model evaluation: a clip evaluated a few frames at a time, in clip order, inside ONE model
evaluation, and the anchor frames carried from one window to the next.

Sequential equals batched (docs/how-it-works.md): frame i needs frames 0 and i-1 at the same layer and the same model
evaluation. When an evaluation is split into windows [s, e) taken in clip order, frame s's previous frame
and the clip's frame 0 were evaluated by an earlier window of the SAME evaluation, so carrying their
attention inputs to the next window (two frames per layer and conditioning) makes every window exact. The
carry lives one evaluation: nothing is kept across steps, so every sampler (ancestral and SDE ones too,
whose noise the sampler draws for the whole clip) gives the same clip whatever the window size.
"""
from __future__ import annotations

import threading
from typing import Callable

import torch

from .errors import CrossFrameError


def window_bounds(n_frames: int, size: int) -> list[tuple[int, int]]:
    """[(start, end), ...] covering n_frames in order; size 0 (or the clip or more) = one window."""
    if n_frames < 1:
        raise CrossFrameError("window_bounds: a clip has at least one frame.")
    size = n_frames if size <= 0 else min(size, n_frames)
    return [(s, min(s + size, n_frames)) for s in range(0, n_frames, size)]


def largest_window(n_frames: int, fits: Callable[[int], bool]) -> int:
    """The largest window size k in 1..n_frames with fits(k) (fits must be monotone: true up to some k);
    1 when nothing fits (the smallest batch there is; ComfyUI then offloads weights as it does for images)."""
    if fits(n_frames):
        return n_frames
    lo, hi = 1, n_frames  # fits(hi) is false
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


class WindowCarry:
    """Attention inputs of earlier windows of the current model evaluation, per (layer, conditioning group).

    Three kinds of entries, each [T, C] per clip frame: the clip's anchor frame (frame 0), the latest keyframe,
    and recent frames (the previous window's last frame, or all of it, see `keep`). A lookup names the clip
    frame it wants and gets it only if an earlier window of this evaluation held it.

    Written from several threads at once under MultiGPU CFG split (each thread its own conditioning), so
    writes take a lock; an evaluation's windows themselves run one after another.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._anchor: dict[tuple, tuple[int, torch.Tensor]] = {}   # (layer, group) -> (frame, tokens)
        self._key: dict[tuple, tuple[int, torch.Tensor]] = {}
        self._recent: dict[tuple, tuple[int, torch.Tensor]] = {}   # -> (first frame, [frames, T, C])
        self._bytes = 0
        self.peak_bytes = 0   # the most this carry held at once (for the log and docs/windows.md's memory table)

    def clear(self) -> None:
        with self._lock:
            self._anchor.clear()
            self._key.clear()
            self._recent.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def _put(self, store: dict, key, value) -> None:
        with self._lock:
            old = store.get(key)
            if old is not None:
                self._bytes -= old[1].numel() * old[1].element_size()
            store[key] = value
            self._bytes += value[1].numel() * value[1].element_size()
            self.peak_bytes = max(self.peak_bytes, self._bytes)

    def put_anchor(self, layer, group, frame: int, tokens: torch.Tensor) -> None:
        self._put(self._anchor, (layer, group), (frame, tokens))

    def put_key(self, layer, group, frame: int, tokens: torch.Tensor) -> None:
        self._put(self._key, (layer, group), (frame, tokens))

    def put_recent(self, layer, group, first_frame: int, tokens: torch.Tensor) -> None:
        """tokens: [frames, T, C] for clip frames first_frame.. (replaces the previous window's)."""
        self._put(self._recent, (layer, group), (first_frame, tokens))

    def keep(self, layer, group, tokens: torch.Tensor, start: int, anchors, whole_window: bool = False) -> None:
        """Keep what later windows of this evaluation read from window `tokens` ([frames, T, C], clip frames
        start..) of one conditioning group, as the window's anchors say (anchors.WindowAnchors): the clip's
        frame 0, the newest keyframe, its last frame (all of it with whole_window: a user's windows may
        overlap). Copies of single frames: a view would keep the whole window's batch alive."""
        if anchors.carry_anchor is not None:
            self.put_anchor(layer, group, anchors.carry_anchor, tokens[anchors.carry_anchor - start].clone())
        if anchors.carry_key is not None:
            self.put_key(layer, group, anchors.carry_key, tokens[anchors.carry_key - start].clone())
        if anchors.carry_last:
            if whole_window:
                self.put_recent(layer, group, start, tokens)
            else:
                self.put_recent(layer, group, start + tokens.shape[0] - 1, tokens[-1:].clone())

    def get(self, layer, group, frame: int) -> torch.Tensor | None:
        key = (layer, group)
        for store in (self._anchor, self._key):
            entry = store.get(key)
            if entry is not None and entry[0] == frame:
                return entry[1]
        entry = self._recent.get(key)
        if entry is not None and entry[0] <= frame < entry[0] + entry[1].shape[0]:
            return entry[1][frame - entry[0]]
        return None

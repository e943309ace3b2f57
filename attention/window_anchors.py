"""Cross-window anchors: a video model sampled in context windows (each model call holds a window of latent
frames, evaluated one window after another in clip order within one model evaluation) lets every window's
self-attention also attend to two anchor frames at the same layer and the same step:

- first: latent frame 0 as the window holding it (window 0) saw it;
- previous: the last latent frame of the window evaluated before this one.

Window 0 records, and is never changed (so it equals sampling without anchors); a later window's keys and
values become `[own tokens; first frame; previous window's last frame]` (the query keeps its length). One
window covering the clip holds frame 0, so it is window 0 and stays plain sampling.

The anchors' keys are kept as the model computed them, after its positional encoding: each anchor keeps the
temporal position it had in the window it came from (first: position 0; previous: the last position of the
previous window). Nothing here knows a model: the front end (nodes/families/way_wan_windows.py) says which
frames a call holds and how many tokens a frame has.

Keys are (layer, conditioning): a conditioning keeps its key whether ComfyUI batches cond and uncond in one
call or calls them one by one, so nothing depends on how the calls are cut. Only the current step is kept
(each entry remembers its sigma and is overwritten by the next step's): two frames per layer and
conditioning, whatever the clip's length. Where those frames wait between windows (pinned host memory with
copies that overlap the model's work, or the GPU) is attention/anchor_keeping.py's business.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch

from .anchor_keeping import KEEP_CHOICES, keeper
from .errors import CrossFrameError

WINDOW_ANCHOR_CHOICES = ("first+previous", "first", "previous")
NAME = "Cross-Window Anchors"
_SIGMA_RTOL = 1e-4


@dataclass(frozen=True)
class WindowCall:
    """One model call: the clip frame of each latent frame it holds (in order), the tokens of one latent
    frame, its noise level, and one key per batch chunk (chunk-major, one conditioning each). `leading`: how
    many of the frames come before the window's own (core's causal_window_fix prepends the frame before the
    window: context only, its output is dropped)."""

    frames: tuple
    tokens_per_frame: int
    sigma: float
    chunks: tuple
    leading: int = 0

    @property
    def start(self) -> int:
        """The window's first own clip frame (0: the window holding the clip's first frame)."""
        return self.frames[self.leading]

    def describe(self) -> str:
        return f"{self.start}..{self.frames[-1]}"


@dataclass
class _Frame:
    sigma: float
    call: WindowCall
    key: tuple   # its keys and values in the keeper


def _same_sigma(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_SIGMA_RTOL, abs_tol=1e-6)


class WindowAnchors:
    """The anchors of one sampling run (reset at its start). `active_sigmas` = (high, low): the part of the
    schedule where anchors act; None = every step. `keep`: where the frames wait between windows, "cpu"
    (pinned host memory; the GPU holds only the layer being read and the next) or "gpu". Deep copies return
    the same object (ModelPatcher.clone() deep-copies model options; a copy would split recording and
    reading)."""

    def __init__(self, anchors: str = "first+previous", who: str = NAME, active_sigmas=None, keep: str = "cpu"):
        if anchors not in WINDOW_ANCHOR_CHOICES:
            raise CrossFrameError(f"{who}: anchors={anchors!r}; use one of {', '.join(WINDOW_ANCHOR_CHOICES)}.")
        if keep not in KEEP_CHOICES:
            raise CrossFrameError(f"{who}: keep_anchors_on={keep!r}; use one of {', '.join(KEEP_CHOICES)}.")
        self.uses_first = "first" in anchors
        self.uses_previous = "previous" in anchors
        self.who = who
        self.active_sigmas = active_sigmas
        self.kept = keeper(keep)
        self._first: dict = {}
        self._last: dict = {}
        self._next_layer: dict = {}   # layer -> the layer that came after it (prefetch order, learnt)
        self._call_starts: set = set()   # layers that begin a model call
        self._seen = threading.local()   # this thread's last (call, layer)
        self._lock = threading.Lock()   # MultiGPU runs cond and uncond in two threads

    def __deepcopy__(self, memo):
        return self

    def reset(self) -> None:
        with self._lock:
            self._first.clear()
            self._last.clear()
            self.kept.clear()

    def nbytes(self) -> dict:
        """Bytes of kept frames: {"device": ..., "host": ...}."""
        return self.kept.nbytes()

    def active(self, sigma: float) -> bool:
        if self.active_sigmas is None:
            return True
        high, low = self.active_sigmas
        return low * (1 - _SIGMA_RTOL) <= sigma <= high * (1 + _SIGMA_RTOL)

    def kv(self, layer, call: WindowCall, k: torch.Tensor, v: torch.Tensor):
        """Keys and values `[batch, tokens, channels]` of one self-attention call -> those to attend to."""
        self._check(call, k)
        if not self.active(call.sigma):
            return k, v
        self._learn_order(layer, call)
        n, hw = len(call.chunks), call.tokens_per_frame
        per = k.shape[0] // n
        holds_first = call.start == 0
        chunk_parts = []   # per chunk, the anchor frames to append
        for c, chunk in enumerate(call.chunks):
            rows = slice(c * per, (c + 1) * per)
            slot = (layer, chunk)
            with self._lock:   # read before this window overwrites the previous window's last frame
                frames = [] if holds_first else self._anchors_for(slot, call)
            chunk_parts.append([self.kept.load(f.key, k) for f in frames])
            if holds_first and self.uses_first:
                self._record(self._first, ("first", slot), call, k[rows, :hw], v[rows, :hw])
            if self.uses_previous:
                self._record(self._last, ("last", slot), call, k[rows, -hw:], v[rows, -hw:])
        self._prefetch_after(layer, call, k.device, holds_first)
        if holds_first:
            return k, v
        return _appended(k, v, chunk_parts, per, hw)

    def _record(self, frames: dict, key: tuple, call: WindowCall, k: torch.Tensor, v: torch.Tensor) -> None:
        self.kept.save(key, k, v)
        with self._lock:
            frames[key[1]] = _Frame(call.sigma, call, key)

    def _learn_order(self, layer, call: WindowCall) -> None:
        """Remember which layer follows which (across calls too: the last layer is followed by the first)."""
        seen = getattr(self._seen, "last", None)
        with self._lock:
            if seen is not None:
                self._next_layer[seen[1]] = layer
            if seen is None or seen[0] is not call:
                self._call_starts.add(layer)
        self._seen.last = (call, layer)

    def _prefetch_after(self, layer, call: WindowCall, device, holds_first: bool) -> None:
        """Start moving the next layer's anchors while this layer runs: within a window that reads anchors,
        and from the last layer of any window to the first layer of the next."""
        if not self.kept.prefetches:
            return
        with self._lock:
            following = self._next_layer.get(layer)
            if following is None or (holds_first and following not in self._call_starts):
                return
            keys = [f.key for chunk in call.chunks
                    for f in (self._first.get((following, chunk)), self._last.get((following, chunk)))
                    if f is not None]
        for key in keys:
            self.kept.prefetch(key, device)

    def _anchors_for(self, slot, call: WindowCall) -> list:
        parts = []
        if self.uses_first:
            first = self._first.get(slot)
            if first is None or not _same_sigma(first.sigma, call.sigma):
                raise CrossFrameError(
                    f"{self.who}: the window of frames {call.describe()} came at noise level "
                    f"sigma={call.sigma:.4g} before the window holding frame 0 was evaluated at that level, so "
                    "there is no first frame to anchor to. Use a context schedule whose windows start at frame "
                    "0 at every step ('batched' or 'standard_static').")
            parts.append(first)
        if self.uses_previous:
            last = self._last.get(slot)
            if last is None or not _same_sigma(last.sigma, call.sigma):
                raise CrossFrameError(
                    f"{self.who}: the window of frames {call.describe()} is the first evaluated at noise level "
                    f"sigma={call.sigma:.4g} but does not hold frame 0, so it has no previous window. Use a "
                    "context schedule whose windows start at frame 0 at every step ('batched' or "
                    "'standard_static').")
            if last.call.start >= call.start:
                raise CrossFrameError(
                    f"{self.who}: the window of frames {call.describe()} came after the window of frames "
                    f"{last.call.describe()}: windows are not evaluated in clip order, so a window's previous "
                    "window would lie after it. Set context_schedule to 'batched' or 'standard_static'.")
            parts.append(last)
        return parts

    def _check(self, call: WindowCall, k: torch.Tensor) -> None:
        n, hw, t = len(call.chunks), call.tokens_per_frame, len(call.frames)
        if n == 0 or k.shape[0] % n:
            raise CrossFrameError(f"{self.who}: a batch of {k.shape[0]} cannot hold {n} conditionings "
                                  "equally; this sampler's batching is not supported.")
        if k.ndim != 3 or k.shape[1] != t * hw:
            raise CrossFrameError(
                f"{self.who}: the self-attention holds {k.shape[1] if k.ndim == 3 else list(k.shape)} tokens, "
                f"not {t} latent frames of {hw} tokens: the model adds tokens of its own (a reference latent, "
                "context latents or frames concatenated in time), which cross-window anchors do not support.")


def _appended(k: torch.Tensor, v: torch.Tensor, chunk_parts: list, per: int, hw: int):
    """[own tokens; anchor frames] of every chunk, written once into new key and value tensors (no
    intermediate concatenations on this per-layer path)."""
    tokens, count = k.shape[1], len(chunk_parts[0])
    out_k = k.new_empty(k.shape[0], tokens + count * hw, *k.shape[2:])
    out_v = v.new_empty(v.shape[0], tokens + count * hw, *v.shape[2:])
    out_k[:, :tokens] = k
    out_v[:, :tokens] = v
    for c, parts in enumerate(chunk_parts):
        rows = slice(c * per, (c + 1) * per)
        for i, part in enumerate(parts):
            at = slice(tokens + i * hw, tokens + (i + 1) * hw)
            out_k[rows, at] = part[0]
            out_v[rows, at] = part[1]
    return out_k, out_v


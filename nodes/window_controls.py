"""ControlNet chains per window: each window of frames gets copies of the chain whose hints are its own.

Core keeps the *first* hints when a batch is smaller than the hint batch, and its context-window handler
passes ControlNet chains on whole, so without this a window of frames 8..15 would be guided by the hints of
frames 0..7.
"""
from __future__ import annotations

from ..attention import CrossFrameError


def _chain(control):
    while control is not None:
        yield control
        control = control.previous_controlnet


def check_hint_batch(control, n_frames: int, who: str) -> None:
    """Hints must be one per frame or one for all frames; anything else has no frame-to-hint mapping."""
    for link in _chain(control):
        hint = link.cond_hint_original
        if hint is not None and hint.shape[0] not in (1, n_frames):
            raise CrossFrameError(
                f"{who}: a ControlNet hint batch has {hint.shape[0]} images but the clip has {n_frames} "
                "frames. Give the ControlNet one hint per frame (or a single hint for all frames).")


def check_conditioning_hints(conditioning, n_frames: int, who: str) -> None:
    """check_hint_batch over a CONDITIONING input (before sampling, so the error comes at once)."""
    for _, extras in conditioning:
        if extras.get("control") is not None:
            check_hint_batch(extras["control"], n_frames, who)


def slice_control(control, start: int, end: int, n_frames: int, who: str, memo: dict):
    """A copy of the chain `control` whose per-frame hints are frames start..end-1 (the user's untouched)."""
    if control is None:
        return None
    key = id(control)
    if key in memo:  # positive and negative often share one chain: keep sharing it
        return memo[key]
    check_hint_batch(control, n_frames, who)
    sliced = control.copy()
    hint = control.cond_hint_original
    if hint is not None and hint.shape[0] == n_frames:
        sliced.cond_hint_original = hint[start:end]
    extra = getattr(sliced, "extra_concat_orig", None)
    if extra:
        sliced.extra_concat_orig = [e[start:end] if e.shape[0] == n_frames else e for e in extra]
    # copy() does not carry the chain: rebuild it link by link.
    sliced.set_previous_controlnet(slice_control(control.previous_controlnet, start, end, n_frames, who, memo))
    memo[key] = sliced
    return sliced

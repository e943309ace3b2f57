"""Per-chunk conditioning: give each chunk of frames its own ControlNet hints and per-frame conditioning.

Core keeps the *first* hints when a latent batch is smaller than the hint batch (and resamples other
per-frame conditioning over the batch), so without this a chunk of frames 8..15 would be guided by the data
of frames 0..7.
"""
from __future__ import annotations

import torch

from ..attention import CrossFrameError

# Conditioning entries that may hold one image per frame: inpainting models' concat inputs and
# ConditioningSetMask masks. Sliced with the chunk when their batch is the clip's length.
PER_FRAME_KEYS = ("concat_latent_image", "concat_mask", "mask")


def _slice_control(control, start: int, end: int, n_frames: int, who: str, memo: dict):
    if control is None:
        return None
    key = id(control)
    if key in memo:  # positive and negative often share one chain: keep sharing it
        return memo[key]
    hint = control.cond_hint_original
    if hint is not None and hint.shape[0] not in (1, n_frames):
        raise CrossFrameError(
            f"{who}: a ControlNet hint batch has {hint.shape[0]} images but the clip has {n_frames} frames. "
            "Give the ControlNet one hint per frame (or a single hint for all frames).")
    sliced = control.copy()
    if hint is not None and hint.shape[0] == n_frames:
        sliced.cond_hint_original = hint[start:end]
    extra = getattr(sliced, "extra_concat_orig", None)
    if extra:
        sliced.extra_concat_orig = [e[start:end] if e.shape[0] == n_frames else e for e in extra]
    # copy() does not carry the chain: rebuild it link by link.
    sliced.set_previous_controlnet(_slice_control(control.previous_controlnet, start, end, n_frames, who,
                                                  memo))
    memo[key] = sliced
    return sliced


def conditioning_for_chunk(conditioning, start: int, end: int, n_frames: int, who: str, memo: dict):
    """A copy of a CONDITIONING list whose ControlNet chains see only the hints of frames start..end-1."""
    out = []
    for tensor, extras in conditioning:
        extras = extras.copy()
        for key in PER_FRAME_KEYS:
            value = extras.get(key)
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == n_frames:
                extras[key] = value[start:end]
        if extras.get("control") is not None:
            extras["control"] = _slice_control(extras["control"], start, end, n_frames, who, memo)
        out.append([tensor, extras])
    return out

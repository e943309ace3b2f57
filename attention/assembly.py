"""Build the key/value source of self-attention for a batch of consecutive frames, in one allocation."""
from __future__ import annotations

import torch


def anchor_count(anchors: str, include_self: bool) -> int:
    return ("first" in anchors) + ("previous" in anchors) + bool(include_self)


def assemble_kv(x: torch.Tensor, groups: int, first, prev0: torch.Tensor,
                anchors: str = "first+previous", include_self: bool = False) -> torch.Tensor:
    """Cross-frame K/V source for `x` = [groups * F, T, C], F consecutive frames per group (chunk-major, as
    ComfyUI batches cond/uncond).

    Frame f of a group attends to, in this order: `first` (the clip's anchor frame, [groups, T, C]; or, with
    keyframe anchors, a list of (lo, hi, [groups, T, C]): batch frames lo..hi-1 take that anchor),
    its previous frame (`prev0` [groups, T, C] for f = 0, frame f-1 of the batch otherwise), and, with
    `include_self`, itself. Returns [groups * F, k * T, C]. Query length stays T; nothing needs Q and K to
    have the same length.

    When the batch's frame 0 is the clip's first frame, pass its own tokens as `first` and `prev0`:
    attention over [f0, f0] equals ordinary self-attention over f0 (softmax over duplicated keys).
    """
    b, t, c = x.shape
    frames = b // groups
    xs = x.reshape(groups, frames, t, c)  # a view when contiguous (the usual case)
    use_first, use_prev = "first" in anchors, "previous" in anchors
    k = anchor_count(anchors, include_self)
    out = x.new_empty(groups, frames, k * t, c)
    at = 0
    if use_first:
        if isinstance(first, torch.Tensor):
            out[:, :, :t] = first.unsqueeze(1)  # broadcast over frames: no expanded copy of `first`
        else:
            for lo, hi, anchor in first:
                out[:, lo:hi, :t] = anchor.unsqueeze(1)
        at = t
    if use_prev:
        out[:, 0, at:at + t] = prev0
        out[:, 1:, at:at + t] = xs[:, :-1]
        at += t
    if include_self:
        out[:, :, at:at + t] = xs
    return out.view(b, k * t, c)  # `out` is new and contiguous

"""Build the key/value source of self-attention for a batch of consecutive frames, in one allocation."""
from __future__ import annotations

import torch


def anchor_count(anchors: str, include_self: bool) -> int:
    return ("first" in anchors) + ("previous" in anchors) + bool(include_self)


def assemble_kv(x: torch.Tensor, groups: int, first, prev0: torch.Tensor,
                anchors: str = "first+previous", include_self: bool = False, out=None) -> torch.Tensor:
    """Cross-frame K/V source for `x` = [groups * F, T, ...], F consecutive frames per group (chunk-major, as
    ComfyUI batches cond/uncond); any trailing dims (channels, or heads x head dim), any strides.

    Frame f of a group attends to, in this order: `first` (the clip's anchor frame, [groups, T, ...]; or, with
    keyframe anchors, a list of (lo, hi, [groups, T, ...]): batch frames lo..hi-1 take that anchor),
    its previous frame (`prev0` [groups, T, ...] for f = 0, frame f-1 of the batch otherwise), and, with
    `include_self`, itself. Returns [groups * F, k * T, ...]. Query length stays T; nothing needs Q and K to
    have the same length.

    out: None, or `out(k)` -> a tensor [groups * F, k, T, ...] (any strides) to write the k anchors into, for
    a caller that lays keys out its own way (the DiT adapters write straight into their rebuilt keys); then
    that tensor is returned as given.

    When the batch's frame 0 is the clip's first frame, pass its own tokens as `first` and `prev0`:
    attention over [f0, f0] equals ordinary self-attention over f0 (softmax over duplicated keys).
    """
    b, t, rest = x.shape[0], x.shape[1], tuple(x.shape[2:])
    frames = b // groups
    xs = x.reshape(groups, frames, t, *rest)  # splits the batch dim only: a view
    use_first, use_prev = "first" in anchors, "previous" in anchors
    k = anchor_count(anchors, include_self)
    given = None if out is None else out(k)
    dest = x.new_empty(groups, frames, k, t, *rest) if given is None else given.view(groups, frames, k, t, *rest)
    at = 0
    if use_first:
        if isinstance(first, torch.Tensor):
            dest[:, :, 0] = first.unsqueeze(1)  # broadcast over frames: no expanded copy of `first`
        else:
            for lo, hi, anchor in first:
                dest[:, lo:hi, 0] = anchor.unsqueeze(1)
        at = 1
    if use_prev:
        dest[:, 0, at] = prev0
        dest[:, 1:, at] = xs[:, :-1]
        at += 1
    if include_self:
        dest[:, :, at] = xs
    return dest.view(b, k * t, *rest) if given is None else given  # `dest` is new and contiguous

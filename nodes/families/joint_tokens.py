"""The keys/values rule for joint-attention DiTs, whose self-attention runs over `[text tokens; image tokens]`
(Flux and the models built on its blocks, Qwen-Image, Z-Image), shared by the ways in that reach them.

Given one layer call's keys and values `[B, heads, L, D]` with the first `txt` rows text, keys and values are
rebuilt as `[txt; anchor 1 image; txt; anchor 2 image; ...]`, each anchor paired with the frame's own text
tokens. The core is asked once for keys and once for values (layers `(block, index, "k")` and `(..., "v")`),
with the image rows as a strided view `[B, L_img, heads, D]` (no copy), and writes the anchors' image rows
straight into the rebuilt tensor (assemble_kv's `out`): one allocation and one copy per tensor, as a plain
concatenation would cost. The core stays family-agnostic: it only ever sees "frames x conditionings by tokens".

Why this rule: attention over `[txt; img0; txt; img0]` equals attention over `[txt; img0]` (softmax over
duplicated keys), so the clip's frame 0, and any frame whose anchors are identical to it, is exactly plain
sampling; text keeps its weight relative to the image whatever the number of anchors; no mask is needed, so
the user's attention backend runs unchanged (a mask would push flash attention off its fast path).
"""
from __future__ import annotations

import torch

from ...attention.errors import CrossFrameError
from .base import CrossFramePatch


class JointTokensPatch(CrossFramePatch):
    def check_mask(self, attn_mask) -> None:
        if attn_mask is not None:
            raise CrossFrameError(
                f"{self.who}: the {self.family_name} attention carries a mask (a masked/regional "
                "conditioning), which cross-frame attention cannot extend. Remove the attention mask from "
                "the conditioning, or sample without cross-frame attention.")

    def anchored_kv(self, k: torch.Tensor, v: torch.Tensor, txt: int, layer, eo):
        """(keys, values, number of anchors) for this layer call, or None where the run leaves it alone.
        Both are always handed to the core (a Store run records both and returns None for both)."""
        run = self.current_run()
        window = self.window_frames(eo)
        layouts = [_JointLayout(own, txt) for own in (k, v)]
        answers = [run.kv(layer + (name,), own[:, :, txt:].transpose(1, 2), eo["cond_or_uncond"], eo["sigmas"],
                          eo.get("uuids"), window, out=layout)
                   for name, own, layout in zip(("k", "v"), (k, v), layouts)]
        if any(a is None for a in answers):
            return None
        return layouts[0].result(), layouts[1].result(), layouts[0].copies


class _JointLayout:
    """assemble_kv's `out` for one of k / v: allocates [B, heads, n, L, D] with the frame's own text rows in
    every copy and hands the core its image rows as a view [B, n, L_img, heads, D] to write the anchors into."""

    def __init__(self, own: torch.Tensor, txt: int):
        self.own, self.txt, self.joint, self.copies = own, txt, None, 0

    def __call__(self, copies: int) -> torch.Tensor:
        b, heads, length, dim = self.own.shape
        self.copies = copies
        self.joint = self.own.new_empty(b, heads, copies, length, dim)
        self.joint[:, :, :, :self.txt] = self.own[:, :, None, :self.txt]
        return self.joint.permute(0, 2, 3, 1, 4)[:, :, self.txt:]

    def result(self) -> torch.Tensor:
        b, heads, copies, length, dim = self.joint.shape
        return self.joint.view(b, heads, copies * length, dim)

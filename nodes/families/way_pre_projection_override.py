"""Way in for DiTs whose self-attention hook comes before the projections, while their keys get RoPE together
with the queries after it (Cosmos Predict2 and Anima, `comfy.ldm.cosmos.predict2`): a marker in the
`attn1_patch` list plus the pack's attention override (way_attention_override.py), working as a pair.

Their self-attention calls every `attn1_patch` entry with the block's input `[B, tokens, width]` (q, k and v
the same tensor, before the projections), then projects, RMS-norms and rotates q and k in one fused call that
needs both as long as each other, so anchor keys cannot be appended there. The attention call that follows
gets q/k/v `[B, heads, tokens, D]` rotated, through ComfyUI's attention function and so through its override;
but these blocks name no block kind, and their cross-attention carries the same transformer_options. So:

1. the marker (in `attn1_patch`, self-attention only) changes nothing; it tells the override "the next
   attention call on this thread is the self-attention of block `extra_options["block_index"]`";
2. the override, on that marked call, replaces k and v with the frame's anchored keys/values from the core
   (joint_tokens.py's rule with no text rows: `[anchor 1; anchor 2; ...]`); unmarked calls (cross-attention)
   pass through untouched. A marked call whose keys are not as long as its queries is not the self-attention
   announced: it stops with an error rather than guess.

Keys arrive rotated: every frame of the clip is one latent frame of the same size, so every frame's tokens sit
at the same positions, and an anchor's keys are rotated exactly as the frame's own would be. Whether this
ComfyUI's blocks call the marker, then the override, in that order, is what the family's probe checks.
"""
from __future__ import annotations

import threading

import torch

from ...attention.errors import CrossFrameError
from .base import eager
from .way_attention_override import OVERRIDE_KEY, AttentionOverridePatch, AttentionOverrideWay, replaced_error


class _Mark(threading.local):
    """The block whose self-attention is the next attention call, per thread (MultiGPU CFG split runs model
    calls in parallel threads)."""
    index = None


class MarkedOverridePatch(AttentionOverridePatch):
    """The override of this way; `marker` is its partner in the attn1_patch list."""

    kind = "double"   # the family's one block kind (set by the way from its declaration)

    def __init__(self, blocks: frozenset, who: str):
        super().__init__(blocks, who)
        self.mark = _Mark()
        self.marker = SelfAttentionMarker(self)

    def announce(self, options: dict) -> None:
        index = options.get("block_index")
        if index is None:
            raise CrossFrameError(f"{self.who}: this {self.family_name} model's blocks did not say which block "
                                  "is running (no block_index); this ComfyUI version is not supported.")
        if self.mark.index is not None:
            raise self.not_reached_error(options)
        self.mark.index = int(index)

    def not_reached_error(self, options: dict) -> CrossFrameError:
        """A marked self-attention that never reached this override: another override sits in its slot."""
        return replaced_error(self, options.get(OVERRIDE_KEY),
                              f" (the self-attention of block {self.kind} {self.mark.index} never reached it)")

    def layer_of(self, options: dict, args, kwargs) -> tuple | None:
        index, self.mark.index = self.mark.index, None   # the mark is for this one call
        if index is None:
            return None
        layer = (self.kind, index)
        self.check_layout(layer, args, kwargs)   # chosen or not: a marked call must be self-attention
        return layer

    def text_rows(self, options: dict, length: int) -> int:
        return 0   # self-attention over the image tokens only; the text comes in through cross-attention


class SelfAttentionMarker:
    """The attn1_patch entry: marks the next attention call as self-attention and returns nothing to change."""

    def __init__(self, patch: MarkedOverridePatch):
        self.patch = patch

    def __deepcopy__(self, memo):
        return self   # ModelPatcher.clone() deep-copies patches: stay paired with the one override

    @eager
    def __call__(self, q, k, v, pe=None, attn_mask=None, extra_options=None):
        self.patch.announce(extra_options or {})
        return {}


class PreProjectionOverrideWay(AttentionOverrideWay):
    name = "pre-projection marker + attention override (chained)"
    patch_class = MarkedOverridePatch
    hook_words = "self-attention patch followed by the attention override in these blocks"

    def make_patch(self, family, blocks: frozenset, who: str) -> MarkedOverridePatch:
        if len(family.block_lists) != 1:
            raise ValueError(f"{family.name}: this way in serves models with one block kind")
        patch = super().make_patch(family, blocks, who)
        patch.kind = next(iter(family.block_lists))
        return patch

    def install(self, patcher, patch: MarkedOverridePatch) -> None:
        super().install(patcher, patch)
        patcher.set_model_attn1_patch(patch.marker)

    def _model_call(self, patch: MarkedOverridePatch, executor, x, *args, **kwargs):
        patch.mark.index = None   # a model call stopped by an error may have left its mark
        out = super()._model_call(patch, executor, x, *args, **kwargs)
        if patch.mark.index is not None:   # the last block's self-attention never reached the override
            raise patch.not_reached_error(kwargs.get("transformer_options") or {})
        return out


def probe_marked_self_attention(call_model) -> bool | None:
    """Whether a tiny model's blocks call `attn1_patch` with the pre-projection input `[B, tokens, width]` and
    make their self-attention (keys `[B, heads, tokens, D]` as long as the queries) the next call of the
    attention override, in every block: `call_model(transformer_options)` runs the tiny model once (its text
    must be shorter than its image tokens, so cross-attention cannot pass for self-attention). True / False;
    None when the tiny call itself fails (inconclusive)."""
    events = []

    def marker(q, k, v, pe=None, attn_mask=None, extra_options=None):
        index = (extra_options or {}).get("block_index")
        events.append(("marker", index, q.ndim == 3 and k.shape == q.shape))   # the block's input, unprojected
        return {}

    def override(func, *args, **kwargs):
        q, k = args[:2]
        index = (kwargs.get("transformer_options") or {}).get("block_index")
        events.append(("attention", index, bool(kwargs.get("skip_reshape")) and k.ndim == 4
                       and k.shape[2] == q.shape[2]))
        return func(*args, **kwargs)

    try:
        with torch.inference_mode():
            call_model({"patches": {"attn1_patch": [marker]}, OVERRIDE_KEY: override})
    except Exception:
        return None
    marks = [i for i, event in enumerate(events) if event[0] == "marker"]
    if not marks:
        return False
    return all(events[i][2] and events[i][1] is not None and i + 1 < len(events)
               and events[i + 1] == ("attention", events[i][1], True) for i in marks)

"""Way in for joint-attention DiTs (Flux.1/Flux.2, Chroma, HunyuanVideo, Qwen-Image; ComfyUI 0.30.0 and newer):
the pre-attention `attn1_patch` their blocks call after QK-norm, before RoPE.

Their joint-attention blocks call every `attn1_patch` entry as `p(q, k, v, pe=, attn_mask=, extra_options=)`
with q/k/v `[B, heads, L, D]` (text tokens first, then image tokens; after QK-norm, before RoPE) and use the
`q`, `k`, `v`, `pe`, `attn_mask` of the returned dict. Keys and values follow the joint-token rule
(joint_tokens.py); `pe` is repeated once per anchor, so anchor tokens keep the RoPE positions of the same
pixels (their copy of `pe` is the frame's own). ComfyUI rotates q with the first Lq rows of `pe` and k with
all of it, so the extended `pe` keeps `[txt; img]` first.

"Image rows" are every row after the text: with Kontext / Flux.2 / Qwen-Image-Edit reference images
(`reference_image_num_tokens`), the reference image's tokens ride along with the frame's own, so each frame
also sees its anchors' view of the reference image. Reference and frames must then carry the same reference
images (otherwise the token counts differ and the run stops with the resolution error).
"""
from __future__ import annotations

import threading

import torch

from ...attention.errors import CrossFrameError
from .base import Way
from .joint_tokens import JointTokensPatch


class _PeCache(threading.local):
    """The extended `pe` of the current model call: every layer of one call gets the same `pe` object, so it
    is repeated once per call, not once per layer (per thread: MultiGPU CFG split runs calls in parallel)."""

    def __init__(self):
        self.source = None
        self.copies = 0
        self.extended = None


class DiTAttn1Patch(JointTokensPatch):
    """Callable for the DiT `attn1_patch` list (Flux double/single blocks and the models built on them,
    Qwen-Image blocks): keys and values come before RoPE, so `pe` is repeated to cover the longer keys."""

    def __init__(self, blocks: frozenset, who: str):
        super().__init__(blocks, who)
        self._pe = _PeCache()

    def __call__(self, q, k, v, pe=None, attn_mask=None, extra_options=None):
        eo = extra_options if extra_options is not None else {}
        block_type, index = eo.get("block_type"), eo.get("block_index")
        if block_type is None or not self.selects(block_type, index):
            return {}
        self.current_run()
        self.check_mask(attn_mask)
        length = k.shape[2]
        if q.shape[2] != length or v.shape[2] != length or (pe is not None and pe.shape[2] != length):
            raise CrossFrameError(
                f"{self.who}: another attention patch earlier in the chain changed the keys/values of "
                f"{self.family_name} block {block_type} {index} (queries {q.shape[2]} tokens, keys "
                f"{length}); cross-frame attention cannot combine with it. Apply this node before (upstream "
                "of) the other patch node, or remove one of them.")
        img_slice = eo.get("img_slice")
        if img_slice is None:
            raise CrossFrameError(f"{self.who}: {self.family_name} block {block_type} {index} did not say where "
                                  "its image tokens are (no img_slice); this ComfyUI version is not supported.")
        anchored = self.anchored_kv(k, v, int(img_slice[0]), (block_type, index), eo)
        if anchored is None:
            return {}
        k, v, copies = anchored
        out = {"k": k, "v": v}
        if pe is not None:
            out["pe"] = self._extended_pe(pe, copies)
        return out

    def _extended_pe(self, pe: torch.Tensor, copies: int) -> torch.Tensor:
        if copies == 1:
            return pe
        cache = self._pe
        if cache.source is not pe or cache.copies != copies:
            cache.source, cache.copies = pe, copies
            cache.extended = torch.cat([pe] * copies, dim=2)
        return cache.extended


class HookProbed(Exception):
    """Raised by a probe patch: the block called the hook (and need not finish its forward)."""


def probe_call(run_block) -> bool | None:
    """Call `run_block(patches)` with a patch that stops the block as soon as the hook calls it: True = the
    hook is there, False = the block ran to its end without calling it, None = the probe itself failed (a
    constructor or signature this pack does not know), which proves nothing either way."""
    def probe(*args, **kwargs):
        raise HookProbed()
    try:
        with torch.inference_mode():
            run_block({"attn1_patch": [probe]})
    except HookProbed:
        return True
    except Exception:
        return None
    return False


class DiTPreAttentionWay(Way):
    name = "DiT pre-attention patch"
    patch_class = DiTAttn1Patch
    since = "0.30.0"
    hook_words = "self-attention hook in these blocks"

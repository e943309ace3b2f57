"""Way in for SD1.x / SD2.x / SDXL U-Nets: ComfyUI's attn1_patch in BasicTransformerBlock, called with the
normalised hidden states before the K/V projections (`p(n, context, value, extra_options)` -> a tuple), on
every ComfyUI version. The patch rewrites the K/V source and leaves the query alone, so it chains with other
packs' attn1 patches and any attn1 replace (PAG, SAG), and uses whatever attention backend the user picked."""
from __future__ import annotations

import weakref

import torch

from ...attention.errors import CrossFrameError
from .base import CrossFramePatch, Family, Way

_counts: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {blocks: count}


def self_attention_count(diffusion_model, family: Family, blocks: frozenset) -> int:
    """Transformer blocks (each with one self-attention) that ComfyUI's attn1 patch reaches in `blocks`."""
    cached = _counts.setdefault(diffusion_model, {})
    if blocks not in cached:
        from comfy.ldm.modules.attention import BasicTransformerBlock
        count = 0
        for group in blocks:
            part = getattr(diffusion_model, family.block_lists.get(group, ""), None)
            if isinstance(part, torch.nn.Module):
                count += sum(isinstance(m, BasicTransformerBlock) for m in part.modules())
        cached[blocks] = count
    return cached[blocks]


class Attn1Patch(CrossFramePatch):
    """Callable for the U-Net `attn1_patch` list."""

    def __call__(self, n, context, value, extra_options):
        block = extra_options.get("block")
        if block is None or block[0] not in self.blocks:
            return n, context, value
        run = self.current_run()
        layer = (block[0], block[1], extra_options.get("block_index", 0))
        # Another patch earlier in the chain may have changed the K/V source; build on what it set.
        source = n if context is None else context
        kv = run.kv(layer, source, extra_options["cond_or_uncond"], extra_options["sigmas"],
                    extra_options.get("uuids"), self.window_frames(extra_options))
        if kv is None:
            return n, context, value
        if value is not None and value is not context:
            raise CrossFrameError(
                f"{self.who}: another attn1 patch earlier in the chain gave self-attention different key "
                "and value sources; cross-frame attention cannot combine with it. Apply this node before "
                "(upstream of) the other patch node, or remove one of them.")
        return n, kv, kv


class UNetAttn1Way(Way):
    name = "U-Net attn1 patch (pre-projection)"
    patch_class = Attn1Patch

    def check(self, family: Family, model, blocks: frozenset, who: str) -> None:
        from . import supported_text
        diffusion_model = getattr(model, "diffusion_model", None)
        chosen = "+".join(sorted(blocks))
        if diffusion_model is not None and not family.names_blocks_of_another_kind(blocks) \
                and self_attention_count(diffusion_model, family, blocks) > 0:
            return
        kind = type(diffusion_model).__name__ if diffusion_model is not None else type(model).__name__
        if diffusion_model is not None and family.names_blocks_of_another_kind(blocks) \
                and self_attention_count(diffusion_model, family, family.block_names()) > 0:
            raise family.kinds_error(blocks, who, f" ({kind})")
        raise CrossFrameError(
            f"{who}: this model ({kind}) has no self-attention that cross-frame attention can reach in the "
            f"'{chosen}' blocks, so it would change nothing. Supported: {supported_text()}. For SD U-Nets, "
            "choose blocks that contain attention (auto and 'output' do).")

"""SD1.x / SD2.x / SDXL U-Nets: ComfyUI's attn1_patch in BasicTransformerBlock, called with the normalised
hidden states before the K/V projections (`p(n, context, value, extra_options)` -> a tuple)."""
from __future__ import annotations

import weakref

import torch

from ..attention.errors import CrossFrameError
from ..attention.options import BLOCK_GROUPS, is_dit_blocks
from .family import SUPPORTED, CrossFramePatch, Family

_UNET_GROUPS = {"input": "input_blocks", "middle": "middle_block", "output": "output_blocks"}
_counts: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {blocks: count}


def self_attention_count(diffusion_model, blocks: frozenset) -> int:
    """Transformer blocks (each with one self-attention) that ComfyUI's attn1 patch reaches in `blocks`."""
    cached = _counts.setdefault(diffusion_model, {})
    if blocks not in cached:
        cached[blocks] = _count(diffusion_model, blocks)
    return cached[blocks]


def _count(diffusion_model, blocks: frozenset) -> int:
    from comfy.ldm.modules.attention import BasicTransformerBlock
    count = 0
    for group in blocks:
        part = getattr(diffusion_model, _UNET_GROUPS.get(group, ""), None)
        if isinstance(part, torch.nn.Module):
            count += sum(isinstance(m, BasicTransformerBlock) for m in part.modules())
    return count


class Attn1Patch(CrossFramePatch):
    """Rewrites the self-attention K/V source of the chosen U-Net blocks and leaves the query alone, so it
    chains with other packs' attn1 patches and any attn1 replace (PAG, SAG), and uses whatever attention
    backend the user picked."""

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


class UNetFamily(Family):
    """Everything that is not a recognised DiT is checked as a U-Net: the patch must reach some
    BasicTransformerBlock in the chosen groups, or the model is refused (DiTs without a hook, Wan...)."""

    name = "SD U-Net"
    patch_class = Attn1Patch

    def matches(self, diffusion_model) -> bool:
        return True

    def default_blocks(self, diffusion_model) -> frozenset:
        return frozenset({"output"})

    def check(self, model, blocks: frozenset, who: str) -> None:
        diffusion_model = getattr(model, "diffusion_model", None)
        if is_dit_blocks(blocks) or not set(blocks) <= set(BLOCK_GROUPS) or diffusion_model is None \
                or self_attention_count(diffusion_model, blocks) == 0:
            kind = type(diffusion_model).__name__ if diffusion_model is not None else type(model).__name__
            if diffusion_model is not None and is_dit_blocks(blocks) \
                    and self_attention_count(diffusion_model, frozenset(BLOCK_GROUPS)) > 0:
                raise CrossFrameError(
                    f"{who}: blocks '{'+'.join(sorted(blocks))}' name DiT blocks, but this model ({kind}) is a "
                    "U-Net. Choose auto, output, input, middle or a mix of them.")
            raise CrossFrameError(
                f"{who}: this model ({kind}) has no U-Net self-attention in the '{'+'.join(sorted(blocks))}' "
                f"blocks, so cross-frame attention would change nothing. It supports {SUPPORTED}; for "
                "U-Nets, choose blocks that contain attention (auto and 'output' do).")

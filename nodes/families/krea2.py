"""Krea2 (`comfy.ldm.krea2.model.SingleStreamDiT`): single-stream blocks with grouped-query attention. Its
blocks do call a pre-attention `attn1_patch`, but rotate q and k together with one `pe` (a longer k cannot
get positions of its own there), so the attention override serves it instead: keys arrive rotated, already
repeated to every query head, and the block names itself ("single", with `img_slice`) in transformer_options.
The text-fusion layers that run before the blocks carry no block name and are left alone."""
from __future__ import annotations

from .base import Family
from .way_attention_override import AttentionOverrideWay, probe_named_attention


def probe_blocks() -> bool | None:
    import torch
    import comfy.ops
    from comfy.ldm.krea2 import model
    tiny = model.SingleStreamDiT(features=32, tdim=16, txtdim=8, heads=2, kvheads=1, multiplier=1, layers=1,
                                 patch=2, channels=4, txtlayers=1, txtheads=1, txtkvheads=1,
                                 operations=comfy.ops.disable_weight_init)
    return probe_named_attention(lambda options: tiny(torch.zeros(1, 4, 4, 4), torch.zeros(1),
                                                      torch.zeros(1, 2, 8), transformer_options=options))


FAMILY = Family(
    name="Krea2",
    models="Krea2",
    model_classes=(("comfy.ldm.krea2.model", "SingleStreamDiT"),),
    way=AttentionOverrideWay(),
    block_lists={"single": "blocks"},
    presets=("single", "single[14:]"),
    # The second half of the blocks (14 of 28), as for the other single-kind families.
    default_blocks=lambda diffusion_model: frozenset(
        {f"single[{len(getattr(diffusion_model, 'blocks', ())) // 2}:]"}),
    default_text="the second half of its blocks (single[14:] on its 28)",
    probe=probe_blocks,
)

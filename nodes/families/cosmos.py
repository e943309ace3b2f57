"""Cosmos Predict2 (2B, 14B) and Anima: `comfy.ldm.cosmos.predict2.MiniTrainDIT` and its subclass
`comfy.ldm.anima.model.Anima` (the same blocks behind a text adapter), used as image models: one latent frame
per clip frame, the clip as a batch (like HunyuanVideo's entry). Their blocks call a self-attention
`attn1_patch` before the projections and rotate q and k together after it, so a marker there and the
attention override serve them (way_pre_projection_override.py). ComfyUI names no block kind for them; the
registry calls their blocks "double", as for the other single-kind DiTs (Qwen-Image, Z-Image), with the index
that MiniTrainDIT puts in transformer_options["block_index"]."""
from __future__ import annotations

from .base import Family
from .way_pre_projection_override import PreProjectionOverrideWay, probe_marked_self_attention


def probe_blocks() -> bool | None:
    """A tiny MiniTrainDIT (one block, 4 image tokens, 2 text tokens) called once: does its self-attention
    call the marker before the projections and then the override? (0.3.64 calls no attn1_patch here.)"""
    import torch
    import comfy.ops
    from comfy.ldm.cosmos import predict2
    tiny = predict2.MiniTrainDIT(max_img_h=8, max_img_w=8, max_frames=1, in_channels=4, out_channels=4,
                                 patch_spatial=2, patch_temporal=1, model_channels=16, num_blocks=1, num_heads=1,
                                 crossattn_emb_channels=8, pos_emb_cls="rope3d",
                                 operations=comfy.ops.disable_weight_init)
    return probe_marked_self_attention(lambda options: tiny(torch.zeros(1, 4, 1, 4, 4), torch.zeros(1),
                                                            torch.zeros(1, 2, 8), transformer_options=options))


FAMILY = Family(
    name="Cosmos Predict2",
    models="Cosmos Predict2 and Anima, one latent frame per frame",
    model_classes=(("comfy.ldm.cosmos.predict2", "MiniTrainDIT"), ("comfy.ldm.anima.model", "Anima")),
    way=PreProjectionOverrideWay(),
    block_lists={"double": "blocks"},
    presets=("double", "double[14:]"),
    # The second half of the blocks (the 2B and Anima: 14 of 28), as for the other single-kind families.
    default_blocks=lambda diffusion_model: frozenset(
        {f"double[{len(getattr(diffusion_model, 'blocks', ())) // 2}:]"}),
    default_text="the second half of its blocks (double[14:] on the 2B's 28)",
    probe=probe_blocks,
)

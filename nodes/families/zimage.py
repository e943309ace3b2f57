"""Z-Image (Turbo, Base, Edit) and Lumina 2: `comfy.ldm.lumina.model.NextDiT`. Its blocks call no
self-attention hook, but each calls ComfyUI's attention function with the model call's transformer_options,
so the attention override serves it. Only the main layers are touched (ComfyUI names them "double" in
transformer_options' block_type while they run; the noise and context refiners, which run before and
attend over image-only or text-only sequences, carry no block_type and are left alone)."""
from __future__ import annotations

from .base import Family
from .way_attention_override import AttentionOverrideWay, padded_patch_tokens, probe_named_attention


def probe_main_layers() -> bool | None:
    """A tiny NextDiT called once: does the attention of its main layers go through the override, with the
    layer named (block_type / block_index) in transformer_options? (0.3.64 calls the override, unnamed.)"""
    import torch
    import comfy.ops
    from comfy.ldm.lumina import model
    tiny = model.NextDiT(patch_size=2, in_channels=4, dim=16, n_layers=1, n_refiner_layers=1, n_heads=1,
                         n_kv_heads=1, cap_feat_dim=8, axes_dims=[4, 6, 6], axes_lens=[8, 8, 8],
                         operations=comfy.ops.disable_weight_init)
    return probe_named_attention(lambda options: tiny(torch.zeros(1, 4, 4, 4), torch.zeros(1),
                                                      torch.zeros(1, 2, 8), 2, transformer_options=options))


FAMILY = Family(
    name="Z-Image",
    models="Z-Image (Turbo, Base) and Lumina 2",
    model_classes=(("comfy.ldm.lumina.model", "NextDiT"),),
    way=AttentionOverrideWay(image_tokens=padded_patch_tokens),
    block_lists={"double": "layers"},
    presets=("double", "double[15:]"),
    # The second half of the main layers (Z-Image: 15 of 30), as for Qwen-Image: the decoder's analogue.
    default_blocks=lambda diffusion_model: frozenset(
        {f"double[{len(getattr(diffusion_model, 'layers', ())) // 2}:]"}),
    default_text="the second half of its main layers (double[15:] on Z-Image's 30)",
    probe=probe_main_layers,
)

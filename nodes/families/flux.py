"""Flux.1 (dev, schnell, Kontext and other fine-tunes) and Flux.2: `comfy.ldm.flux.model.Flux`, whose double-
and single-stream blocks call the pre-attention hook (ComfyUI 0.30.0 and newer). Layers are ("double", i) and
("single", i), as ComfyUI names them in extra_options["block_type"] / ["block_index"].

Chroma, Chroma Radiance and HunyuanVideo run these same blocks from models of their own: they are declared
in files of their own (same way, same probe)."""
from __future__ import annotations

from .base import Family
from .way_dit_pre_attention import DiTPreAttentionWay, probe_call


def probe_flux_blocks() -> bool | None:
    """A tiny double- and single-stream block, each called once: do both call the pre-attention hook?"""
    import torch
    import comfy.ops
    from comfy.ldm.flux import layers
    ops, width = comfy.ops.disable_weight_init, 8
    double = layers.DoubleStreamBlock(width, 1, 1.0, operations=ops)
    single = layers.SingleStreamBlock(width, 1, 1.0, operations=ops)
    x, vec = torch.zeros(1, 2, width), torch.zeros(1, width)
    results = [probe_call(lambda p: double(img=x, txt=x, vec=vec, pe=None, transformer_options={"patches": p})),
               probe_call(lambda p: single(x, vec=vec, pe=None, transformer_options={"patches": p}))]
    return None if None in results else all(results)


FLUX_BLOCKS = {"double": "double_blocks", "single": "single_blocks"}
FLUX_PRESETS = ("single", "double", "double+single")
# The single-stream blocks: the later two thirds of Flux.1's depth (38 of 57 blocks; Flux.2: 48 of 56), where
# image and text share one stream -- the role the decoder plays for the classic U-Net choice, at about two
# thirds of the cost of every block.
SINGLE = frozenset({"single"})

def flux_blocks_family(name: str, models: str, model_classes, default_text: str = "single") -> Family:
    """A family whose transformer is Flux's double- and single-stream blocks (they set the same block_type /
    block_index / img_slice): Flux's way in, probe, block kinds and default."""
    return Family(name=name, models=models, model_classes=model_classes, way=DiTPreAttentionWay(),
                  block_lists=FLUX_BLOCKS, presets=FLUX_PRESETS, default_blocks=lambda diffusion_model: SINGLE,
                  default_text=default_text, probe=probe_flux_blocks)


FAMILY = flux_blocks_family("Flux", "Flux.1 (dev, schnell, Kontext and fine-tunes) and Flux.2",
                            (("comfy.ldm.flux.model", "Flux"),), "single (the single-stream blocks)")

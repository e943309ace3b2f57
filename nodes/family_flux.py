"""Flux.1 (dev, schnell, Kontext and other fine-tunes) and Flux.2: `comfy.ldm.flux.model.Flux`, whose double-
and single-stream blocks call the pre-attention hook (ComfyUI 0.30.0 and newer). Layers are
("double", i) and ("single", i), as ComfyUI names them in extra_options["block_type"] / ["block_index"].

Chroma and HunyuanVideo reuse Flux's blocks from models of their own, and Cosmos Predict2 calls a hook of
the same name with other inputs: they are not this family (the model class decides) and stay refused.
"""
from __future__ import annotations

from .family_dit import DiTAttn1Patch, DiTFamily, hook_in_source


class FluxAttn1Patch(DiTAttn1Patch):
    family_name = "Flux"


class FluxFamily(DiTFamily):
    name = "Flux"
    patch_class = FluxAttn1Patch
    model_class_path = ("comfy.ldm.flux.model", "Flux")
    block_lists = {"double": "double_blocks", "single": "single_blocks"}
    block_hint = "single, double or double+single"

    def default_blocks(self, diffusion_model) -> frozenset:
        # The single-stream blocks: the later two thirds of Flux.1's depth (38 of 57 blocks; Flux.2: 48 of 56),
        # where image and text share one stream -- the role the decoder plays for the classic U-Net choice,
        # at about two thirds of the cost of every block.
        return frozenset({"single"})

    def hook_present(self) -> bool:
        from comfy.ldm.flux import layers
        return hook_in_source(layers.DoubleStreamBlock.forward, layers.SingleStreamBlock.forward)

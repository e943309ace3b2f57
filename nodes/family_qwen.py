"""Qwen-Image (and its edit models): `comfy.ldm.qwen_image.model.QwenImageTransformer2DModel`, whose joint
attention calls the pre-attention hook (ComfyUI 0.30.0 and newer). Its blocks are all of one kind, which
ComfyUI names "double" (extra_options["block_type"]); layers are ("double", i).

A text attention mask (a conditioning with padded text) cannot be handled: Qwen-Image builds the mask it
attends with before the hook runs and ignores a mask the hook returns, so longer keys would crash inside
attention. The patch stops with a clear error instead.
"""
from __future__ import annotations

from ..attention.errors import CrossFrameError
from .family_dit import DiTAttn1Patch, DiTFamily, hook_in_source


class QwenAttn1Patch(DiTAttn1Patch):
    family_name = "Qwen-Image"

    def check_mask(self, attn_mask) -> None:
        if attn_mask is not None:
            raise CrossFrameError(
                f"{self.who}: the Qwen-Image conditioning carries a text attention mask (padded prompt "
                "tokens, for example from conditionings of different lengths combined in one batch). Qwen-Image "
                "applies that mask outside the hook cross-frame attention uses, so the two cannot combine. "
                "Use one prompt per conditioning without padding (plain CLIP Text Encode / TextEncodeQwenImage"
                "Edit output), or sample without cross-frame attention.")


class QwenImageFamily(DiTFamily):
    name = "Qwen-Image"
    patch_class = QwenAttn1Patch
    model_class_path = ("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel")
    block_lists = {"double": "transformer_blocks"}
    block_hint = "double or double[30:]"

    def default_blocks(self, diffusion_model) -> frozenset:
        # The second half of the blocks (Qwen-Image: 30 of 60), the analogue of the U-Net decoder.
        n = len(getattr(diffusion_model, "transformer_blocks", ()))
        return frozenset({f"double[{n // 2}:]"})

    def hook_present(self) -> bool:
        from comfy.ldm.qwen_image import model
        return hook_in_source(model.Attention.forward)

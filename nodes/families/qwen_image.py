"""Qwen-Image (and its edit models): `comfy.ldm.qwen_image.model.QwenImageTransformer2DModel`, whose joint
attention calls the pre-attention hook (ComfyUI 0.30.0 and newer). Its blocks are all of one kind, which
ComfyUI names "double" (extra_options["block_type"]); layers are ("double", i).

A text attention mask (a conditioning with padded text) cannot be handled: Qwen-Image builds the mask it
attends with before the hook runs and ignores a mask the hook returns, so longer keys would crash inside
attention. The patch stops with a clear error instead.
"""
from __future__ import annotations

from ...attention.errors import CrossFrameError
from .base import Family
from .way_dit_pre_attention import DiTAttn1Patch, DiTPreAttentionWay, probe_call


class QwenAttn1Patch(DiTAttn1Patch):
    def check_mask(self, attn_mask) -> None:
        if attn_mask is not None:
            raise CrossFrameError(
                f"{self.who}: the Qwen-Image conditioning carries a text attention mask (padded prompt "
                "tokens, for example from conditionings of different lengths combined in one batch). Qwen-Image "
                "applies that mask outside the hook cross-frame attention uses, so the two cannot combine. "
                "Use one prompt per conditioning without padding (plain CLIP Text Encode / TextEncodeQwenImage"
                "Edit output), or sample without cross-frame attention.")


class QwenPreAttentionWay(DiTPreAttentionWay):
    patch_class = QwenAttn1Patch


def probe_qwen_attention() -> bool | None:
    import torch
    import comfy.ops
    from comfy.ldm.qwen_image import model
    attention = model.Attention(8, dim_head=8, heads=1, operations=comfy.ops.disable_weight_init)
    x = torch.zeros(1, 2, 8)
    rope = torch.zeros(1, 4, 1, 4, 2, 2)   # [1, text + image tokens, 1, dim_head / 2, 2, 2]; values unused
    return probe_call(lambda p: attention(x, encoder_hidden_states=x, image_rotary_emb=rope,
                                          transformer_options={"patches": p}))


FAMILY = Family(
    name="Qwen-Image",
    models="Qwen-Image and Qwen-Image-Edit",
    model_classes=(("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel"),),
    way=QwenPreAttentionWay(),
    block_lists={"double": "transformer_blocks"},
    presets=("double", "double[30:]"),
    # The second half of the blocks (Qwen-Image: 30 of 60), the analogue of the U-Net decoder.
    default_blocks=lambda diffusion_model: frozenset(
        {f"double[{len(getattr(diffusion_model, 'transformer_blocks', ())) // 2}:]"}),
    default_text="the second half of its blocks (double[30:] on its 60)",
    probe=probe_qwen_attention,
)

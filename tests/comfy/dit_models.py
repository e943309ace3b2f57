"""Tiny randomly initialised Flux.1, Flux.2 and Qwen-Image models built in-process (no downloads), shaped like
the real ones (same classes, same block kinds, same latent formats), with std 1/sqrt(fan_in) weights."""
from __future__ import annotations

import dataclasses

import torch

from tiny_weights import init_weights


def _flux_config(comfy, flux2: bool) -> dict:
    from comfy.ldm.flux.model import FluxParams
    if flux2:
        cfg = dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=32,
                   hidden_size=64, mlp_ratio=3.0, num_heads=4, depth=2, depth_single_blocks=2,
                   axes_dim=[4, 4, 4, 4], theta=2000, patch_size=1, qkv_bias=False, guidance_embed=False,
                   global_modulation=True, mlp_silu_act=True, ops_bias=False, default_ref_method="index",
                   ref_index_scale=10.0, txt_ids_dims=[3])
    else:
        cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32,
                   hidden_size=64, mlp_ratio=2.0, num_heads=4, depth=2, depth_single_blocks=2,
                   axes_dim=[4, 6, 6], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True,
                   txt_ids_dims=[])
    fields = {f.name for f in dataclasses.fields(FluxParams)}
    return {k: v for k, v in cfg.items() if k in fields or k == "image_model"}


def build(comfy, family: str, seed: int = 4321):
    """A ModelPatcher around a tiny model of `family` ("flux1", "flux2" or "qwen"), fp32 on the CPU."""
    import comfy.latent_formats as lf
    import comfy.model_base as mb
    if family == "qwen":
        unet_config = dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16,
                           num_layers=4, attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32,
                           axes_dims_rope=(4, 6, 6))
        model_class, latent_format = mb.QwenImage, lf.Wan21
    else:
        unet_config = _flux_config(comfy, family == "flux2")
        # Flux.2 runs the same diffusion model class (comfy.ldm.flux.model.Flux, which the family adapter keys
        # on) with Flux.2's block layout; its BaseModel (model_base.Flux2) differs only by padding the text to
        # 512 tokens, which would make this 64-token image 8x slower on the CPU and bury the method's effect
        # under 500 zero text keys, so the tiny Flux.2 uses model_base.Flux.
        model_class = mb.Flux
        latent_format = lf.Flux2 if family == "flux2" else lf.Flux

    class Tiny(comfy.supported_models_base.BASE):
        pass

    Tiny.unet_config = unet_config
    Tiny.unet_extra_config = {}
    Tiny.latent_format = latent_format
    config = Tiny(dict(unet_config))
    config.set_inference_dtype(torch.float32, None)
    model = model_class(config, device=torch.device("cpu"))
    init_weights(model.diffusion_model, torch.Generator().manual_seed(seed))
    model.eval()
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def conditioning(family: str, seed: int = 99, tokens: int = 8):
    g = torch.Generator().manual_seed(seed)

    def one():
        extra = {"pooled_output": torch.randn(1, 32, generator=g), "guidance": 3.5} if family == "flux1" else {}
        return [[torch.randn(1, tokens, 32, generator=g), extra]]
    return one(), one()


def clip_latent(family: str, frames: int = 4, seed: int = 7):
    """A clip with smooth frame-to-frame change: 64 image tokens per frame in every family."""
    shape = {"flux1": (16, 16, 16), "flux2": (128, 8, 8), "qwen": (16, 1, 16, 16)}[family]
    g = torch.Generator().manual_seed(seed)
    base, drift = torch.randn(1, *shape, generator=g), torch.randn(1, *shape, generator=g)
    return {"samples": torch.cat([base + 0.3 * k * drift for k in range(frames)])}

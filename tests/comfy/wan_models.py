"""Tiny randomly initialised Wan 2.1 models (t2v, i2v with CLIP-vision tokens, VACE) built in-process like
dit_models.py builds the image DiTs: ComfyUI's own classes (model_base.WAN21 / WAN21_Vace around WanModel /
VaceWanModel), Wan's latent format, fp32 on the CPU, std 1/sqrt(fan_in) weights. A file of its own so that
the image families' builder stays untouched."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from tiny_weights import init_weights

# 2 blocks of width 64 (4 heads of 16: RoPE axes 8/4/4), 32-wide text; a latent frame of 8x8 is 16 tokens.
_WAN = dict(image_model="wan2.1", patch_size=(1, 2, 2), text_len=8, in_dim=16, dim=64, ffn_dim=128, freq_dim=32,
            text_dim=32, out_dim=16, num_heads=4, num_layers=2, window_size=(-1, -1), qk_norm=True,
            cross_attn_norm=True, eps=1e-6)
CLIP_TOKENS = 4   # CLIP-vision tokens of the I2V model's image cross attention


def build(comfy, kind: str = "t2v", seed: int = 2468):
    """A ModelPatcher around a tiny Wan 2.1: kind 't2v', 'i2v' (two cross-attention calls per block) or 'vace'."""
    import comfy.latent_formats as lf
    import comfy.model_base as mb
    unet_config = dict(_WAN, model_type="i2v" if kind == "i2v" else "t2v")
    model_class = mb.WAN21
    if kind == "vace":
        unet_config.pop("model_type")
        unet_config.update(vace_layers=1, vace_in_dim=96)   # 32 frame channels + 64 mask channels
        model_class = mb.WAN21_Vace

    class Tiny(comfy.supported_models_base.BASE):
        pass

    Tiny.unet_config = unet_config
    Tiny.unet_extra_config = {}
    Tiny.latent_format = lf.Wan21
    config = Tiny(dict(unet_config))
    config.set_inference_dtype(torch.float32, None)
    model = model_class(config, device=torch.device("cpu"))
    init_weights(model.diffusion_model, torch.Generator().manual_seed(seed))
    model.eval()
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def conditioning(kind: str = "t2v", seed: int = 99):
    g = torch.Generator().manual_seed(seed)

    def one():
        extra = {}
        if kind == "i2v":
            extra["clip_vision_output"] = SimpleNamespace(
                penultimate_hidden_states=torch.randn(1, CLIP_TOKENS, 1280, generator=g))
        return [[torch.randn(1, 8, 32, generator=g), extra]]
    return one(), one()


def clip_latent(frames: int = 6, seed: int = 7, static: bool = False):
    """One video latent [1, 16, frames, 8, 8] with smooth frame-to-frame change (or identical frames)."""
    g = torch.Generator().manual_seed(seed)
    base, drift = torch.randn(1, 16, 1, 8, 8, generator=g), torch.randn(1, 16, 1, 8, 8, generator=g)
    steps = [0.0] * frames if static else [0.3 * k for k in range(frames)]
    return {"samples": torch.cat([base + s * drift for s in steps], dim=2)}

"""Tiny models for the AnimateDiff-Evolved tests (test_with_animatediff.py): where the pack is found, a U-Net
whose blocks have SD1.5's channel counts, and a random motion module in AnimateDiff's checkpoint format.

Why these sizes: AnimateDiff-Evolved builds an SD1.5 motion module with fixed channels (320, 640, 1280, 1280
per down block, two temporal modules each) and injects them, in order, after the res/transformer blocks of
the U-Net's input blocks, so the U-Net needs SD1.5's channels and two res blocks per level. Everything else is
cut: transformers only at the first level (input side) and the last output level, a small text width, no
middle transformer, and a motion module with down blocks only (its loader accepts that: it tells SD1.5 from
SDXL by the number of down blocks and builds up/mid blocks only when their keys are present) and one temporal
attention per module. About 660 M U-Net parameters and 137 M motion-module parameters: seconds on a CPU at a
4x4 latent, which is all the tests need."""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

ENV = "CFA_ANIMATEDIFF_PATH"
DEFAULT = Path.home() / ".cache" / "cfa" / "custom_nodes" / "ComfyUI-AnimateDiff-Evolved"
MOTION_MODULE = "cfa_tiny_sd15_motion_module.safetensors"
TEXT_WIDTH = 64


def animatediff_path() -> Path | None:
    """AnimateDiff-Evolved's folder (a checkout of Kosinkadink/ComfyUI-AnimateDiff-Evolved), or None."""
    path = Path(os.environ.get(ENV) or DEFAULT).expanduser()
    return path if (path / "__init__.py").is_file() and (path / "animatediff").is_dir() else None


SKIP_REASON = (f"AnimateDiff-Evolved tests skipped: no checkout at ${ENV} (default {DEFAULT}); it is on no "
               "package registry, so put a checkout of Kosinkadink/ComfyUI-AnimateDiff-Evolved there "
               "(see docs/testing.md)")


def sd15_channel_unet(comfy, seed: int = 11):
    """A ModelPatcher around a BaseModel (what AnimateDiff-Evolved calls SD1.5) with SD1.5's block channels."""

    class SD15Channels(comfy.supported_models_base.BASE):
        unet_config = {
            "context_dim": TEXT_WIDTH, "model_channels": 320, "in_channels": 4, "out_channels": 4,
            "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
            "transformer_depth": [1, 1, 0, 0, 0, 0, 0, 0],
            "transformer_depth_output": [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1],
            "transformer_depth_middle": -1,   # a middle res block (AnimateDiff-Evolved expects one), no attention
            "use_spatial_transformer": True, "use_linear_in_transformer": False, "legacy": False,
            "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False,
            "image_size": 32, "num_head_channels": 64, "num_heads": -1,
        }
        unet_extra_config = {}
        latent_format = comfy.latent_formats.SD15

    config = SD15Channels(SD15Channels.unet_config)
    config.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    model = comfy.model_base.BaseModel(config, device=cpu)
    _init(model.diffusion_model, torch.Generator().manual_seed(seed))
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def _init(module: torch.nn.Module, generator: torch.Generator) -> None:
    """As tiny_weights.init_weights (std 1/sqrt(fan_in)), drawn in place: this model is 30x bigger."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=generator)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=generator)


def _positions(length: int, channels: int) -> torch.Tensor:
    """Sinusoidal frame positions [1, length, channels], the table AnimateDiff checkpoints carry."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    rate = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
    table = torch.zeros(1, length, channels)
    table[0, :, 0::2] = torch.sin(position * rate)
    table[0, :, 1::2] = torch.cos(position * rate)
    return table


def motion_module_state(seed: int = 12, length: int = 32) -> dict[str, torch.Tensor]:
    """A random SD1.5 motion module (down blocks only, one temporal attention per module), in the key layout
    of AnimateDiff checkpoints. `length` 32 frames makes it a v3-style module (no GroupNorm hack)."""
    g = torch.Generator().manual_seed(seed)

    def matrix(rows, cols):
        return torch.randn(rows, cols, generator=g) / math.sqrt(cols)

    def bias(n):
        return torch.randn(n, generator=g) * 0.02

    state = {}
    for block, c in enumerate((320, 640, 1280, 1280)):
        for module in range(2):
            p = f"down_blocks.{block}.motion_modules.{module}.temporal_transformer."
            t = p + "transformer_blocks.0."
            a = t + "attention_blocks.0."
            state.update({
                p + "norm.weight": torch.ones(c), p + "norm.bias": torch.zeros(c),
                p + "proj_in.weight": matrix(c, c), p + "proj_in.bias": bias(c),
                a + "to_q.weight": matrix(c, c), a + "to_k.weight": matrix(c, c), a + "to_v.weight": matrix(c, c),
                a + "to_out.0.weight": matrix(c, c), a + "to_out.0.bias": bias(c),
                a + "pos_encoder.pe": _positions(length, c),
                t + "norms.0.weight": torch.ones(c), t + "norms.0.bias": torch.zeros(c),
                t + "ff.net.0.proj.weight": matrix(8 * c, c), t + "ff.net.0.proj.bias": bias(8 * c),
                t + "ff.net.2.weight": matrix(c, 4 * c), t + "ff.net.2.bias": bias(c),
                t + "ff_norm.weight": torch.ones(c), t + "ff_norm.bias": torch.zeros(c),
                # Random, not zero as in a fresh AnimateDiff module: the module must change the clip.
                p + "proj_out.weight": matrix(c, c), p + "proj_out.bias": bias(c),
            })
    return state


def write_motion_module(folder: Path) -> Path:
    """Save the motion module (fp16, as released modules are) where AnimateDiff-Evolved's loader looks."""
    import safetensors.torch
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MOTION_MODULE
    safetensors.torch.save_file({k: v.half().contiguous() for k, v in motion_module_state().items()}, str(path))
    return path

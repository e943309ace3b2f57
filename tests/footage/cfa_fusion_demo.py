"""Flow-guided fusion on real footage with a tiny random U-Net, for the test (tests/comfy/test_fusion.py) and
the plot (scripts/make_fusion_plot.py): the clip through Batch Video Sampler without and with Flow Guided
Fusion, decoded, and scored by Measure Temporal Consistency's measurement against the source.

No weights can be downloaded, so a stand-in VAE maps frames to latents and back: each 8x8 block's mean colour
(and luma) and a bilinear upsampling. It is local and translation-equivariant like a real VAE, which is what
the warp error measures; the U-Net's random output is squashed into [0, 1] by one fixed sigmoid per clip.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

import cfa_footage

# clip: (frames, size): frames before the clip's first scene cut, at a size a tiny U-Net samples quickly
CLIPS = {"bikes": (8, (320, 136)), "bigbuckbunny": (8, (256, 144))}
SAMPLING = dict(steps=8, denoise=0.6)


def load(name: str, frames: int | None = None) -> np.ndarray:
    count, size = CLIPS[name]
    clip = cfa_footage.decode(name, max_frames=frames or count)
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in clip])


def toy_vae_encode(frames: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(frames).float().permute(0, 3, 1, 2) / 127.5 - 1
    rgb = F.avg_pool2d(x, 8)
    return torch.cat([rgb, rgb.mean(dim=1, keepdim=True)], dim=1) * 2


def toy_vae_decode(latent: torch.Tensor, scale: float) -> np.ndarray:
    x = torch.sigmoid(latent[:, :3].float() / scale)
    x = F.interpolate(x, scale_factor=8, mode="bilinear", align_corners=False)
    return (x.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def schema_defaults(node) -> dict:
    return {i.id: i.default for i in node.define_schema().inputs if getattr(i, "default", None) is not None}


def plain_and_fused(mapping, model, conds, clip: np.ndarray, measure, steps=SAMPLING["steps"],
                    denoise=SAMPLING["denoise"], **fusion) -> dict:
    """{"plain": report, "fused": report, "options": the fusion options}: Batch Video Sampler (cross-frame
    attention, its defaults) on the clip, then the same with Flow Guided Fusion (its defaults, overridden by
    `fusion`), each decoded and measured against the source clip."""
    sampler, fusion_node = mapping["CFA_BatchVideoSampler"], mapping["CFA_FlowGuidedFusion"]
    flow = mapping["CFA_SourceFlow"].execute(torch.from_numpy(clip).float() / 255).args[0]
    options = {**schema_defaults(fusion_node), **fusion}
    fused_model = fusion_node.execute(model, options["strength"], options["start_percent"],
                                      options["end_percent"], options["anchor"], options["occlusion_threshold"],
                                      flow=flow).args[0]
    latent = {"samples": toy_vae_encode(clip)}
    outputs = {}
    for name, m in (("plain", model), ("fused", fused_model)):
        outputs[name] = sampler.execute(m, conds[0], conds[1], latent, 1, steps, 5.0, "euler", "normal", denoise,
                                        0, "first+previous", False, "output", 0.0, 1.0, "auto", "auto",
                                        False).args[0]["samples"]
    scale = float(outputs["plain"].std())
    reports = {name: measure(toy_vae_decode(out, scale), source=clip) for name, out in outputs.items()}
    return {**reports, "options": options}

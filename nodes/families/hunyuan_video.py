"""HunyuanVideo 1.0 and 1.5 used as an image model (`comfy.ldm.hunyuan_video.model.HunyuanVideo`): one latent
frame per clip frame, the clip as a batch. Its transformer is Flux's double- and single-stream blocks, so
Flux's way in, probe and block kinds serve it. (As a video model, with many latent frames in one sample,
its frames would attend to each other already; that is not what this family does.)"""
from .base import Family
from .flux import FLUX_BLOCKS, FLUX_PRESETS, SINGLE, probe_flux_blocks
from .way_dit_pre_attention import DiTPreAttentionWay

FAMILY = Family(
    name="HunyuanVideo",
    models="HunyuanVideo 1.0 and 1.5, one latent frame per frame",
    model_classes=(("comfy.ldm.hunyuan_video.model", "HunyuanVideo"),),
    way=DiTPreAttentionWay(),
    block_lists=FLUX_BLOCKS,
    presets=FLUX_PRESETS,
    default_blocks=lambda diffusion_model: SINGLE,
    default_text="single",
    probe=probe_flux_blocks,
)

"""HunyuanVideo 1.0 and 1.5 used as an image model (`comfy.ldm.hunyuan_video.model.HunyuanVideo`): one latent
frame per clip frame, the clip as a batch. Its transformer is Flux's double- and single-stream blocks, so
Flux's way in, probe and block kinds serve it. (As a video model, with many latent frames in one sample,
its frames would attend to each other already; that is not what this family does.)"""
from .flux import flux_blocks_family

FAMILY = flux_blocks_family("HunyuanVideo", "HunyuanVideo 1.0 and 1.5, one latent frame per frame",
                            (("comfy.ldm.hunyuan_video.model", "HunyuanVideo"),))

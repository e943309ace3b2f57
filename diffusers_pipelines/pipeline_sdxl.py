"""SDXL video pipeline with cross-frame attention: `CrossFrameVideoXLPipeline` (ControlNet image-to-image).

The clip loop is video_loop.py's, shared with the SD pipelines. What SDXL adds: two text encoders (prompt_2,
negative_prompt_2), pooled text embeddings that go with every prompt embedding, and the VAE's optional latent
mean/std and fp32 upcast when encoding. The micro-conditioning (add_time_ids: original_size, crops_coords_top_left,
target_size, aesthetic scores) is the parent's: one row per frame, cut to each window with the rest.
"""
from __future__ import annotations

import torch
from diffusers import StableDiffusionXLControlNetImg2ImgPipeline

from cross_frame_attention.errors import CrossFrameError

from .video_loop import CALL_DOC, ControlNetFramesMixin, CrossFrameClipMixin, options_from

__all__ = ["CrossFrameVideoXLPipeline"]


class CrossFrameVideoXLPipeline(ControlNetFramesMixin, CrossFrameClipMixin, StableDiffusionXLControlNetImg2ImgPipeline):
    """SDXL ControlNet image-to-image video editing with cross-frame attention.

    Load it as its parent: `CrossFrameVideoXLPipeline.from_pretrained(model_id, controlnet=controlnet)` or
    `CrossFrameVideoXLPipeline.from_pipe(pipe)`. Call with `images=[...]` and `control_images=[...]` (one per
    frame; with several ControlNets, one such list per ControlNet).
    """

    _cfa_who = "CrossFrameVideoXLPipeline"

    def _cfa_encode(self, texts, embeds, cfg, device, parent_kwargs):
        xattn = parent_kwargs.get("cross_attention_kwargs") or {}
        positive, negative, pooled, negative_pooled = self.encode_prompt(
            texts["prompt"], texts["prompt_2"], device, 1, cfg, texts["negative_prompt"],
            texts["negative_prompt_2"], prompt_embeds=embeds["prompt_embeds"],
            negative_prompt_embeds=embeds["negative_prompt_embeds"],
            pooled_prompt_embeds=embeds["pooled_prompt_embeds"],
            negative_pooled_prompt_embeds=embeds["negative_pooled_prompt_embeds"],
            lora_scale=xattn.get("scale"), clip_skip=parent_kwargs.get("clip_skip"))
        return {"prompt_embeds": positive, "pooled_prompt_embeds": pooled,
                "negative_prompt_embeds": negative if cfg else None,
                "negative_pooled_prompt_embeds": negative_pooled if cfg else None}

    def _cfa_vae_encode(self, pixels, dtype):
        if not self.vae.config.force_upcast:
            return self.vae.encode(pixels.to(dtype=dtype))
        was = self.vae.dtype  # SDXL's VAE overflows in fp16: encode in fp32, as the parent does
        if was == torch.float32:
            return self.vae.encode(pixels.float())
        self.vae.to(dtype=torch.float32)
        try:
            return self.vae.encode(pixels.float())
        finally:
            self.vae.to(dtype=was)

    def _cfa_scale_latents(self, init, device, dtype):
        config = self.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is None or std is None:
            return config.scaling_factor * init
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(device=device, dtype=dtype)
        std = torch.tensor(std).view(1, -1, 1, 1).to(device=device, dtype=dtype)
        return (init - mean) * config.scaling_factor / std

    @torch.no_grad()
    def __call__(self, prompt=None, images=None, control_images=None, *, frames_per_batch: int = 0,
                 blocks="output", anchors: str = "first+previous", include_self: bool = False,
                 start_percent: float = 0.0, end_percent: float = 1.0, bank_device: str = "auto",
                 bank_dtype: str = "auto", prompt_2=None, guidance_scale: float = 5.0, negative_prompt=None,
                 negative_prompt_2=None, prompt_embeds=None, negative_prompt_embeds=None,
                 pooled_prompt_embeds=None, negative_pooled_prompt_embeds=None, generator=None,
                 height: int | None = None, width: int | None = None, output_type: str = "pil",
                 return_dict: bool = True, anchor_every: int = 0, **kwargs):
        who = self._cfa_who
        for given, pooled, name, pooled_name in (
                (prompt_embeds, pooled_prompt_embeds, "prompt_embeds", "pooled_prompt_embeds"),
                (negative_prompt_embeds, negative_pooled_prompt_embeds, "negative_prompt_embeds",
                 "negative_pooled_prompt_embeds")):
            if given is not None and pooled is None:
                raise CrossFrameError(f"{who}: {name} needs {pooled_name} too (SDXL conditions on the second "
                                      "text encoder's pooled output); pass both, or a prompt instead.")
        options = options_from(who, blocks, anchors, include_self, start_percent, end_percent, bank_device,
                               bank_dtype, anchor_every)
        return self._cfa_call(
            images=images, control_images=control_images, frames_per_batch=frames_per_batch, options=options,
            guidance_scale=guidance_scale,
            texts={"prompt": prompt, "prompt_2": prompt_2, "negative_prompt": negative_prompt,
                   "negative_prompt_2": negative_prompt_2},
            embeds={"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds,
                    "pooled_prompt_embeds": pooled_prompt_embeds,
                    "negative_pooled_prompt_embeds": negative_pooled_prompt_embeds},
            generator=generator, output_type=output_type, return_dict=return_dict,
            parent_kwargs=dict(kwargs, height=height, width=width),
            preprocess_kwargs={"height": height, "width": width})

    __call__.__doc__ = CALL_DOC.format(
        control="\n        control_images: one ControlNet image per frame, the frames' size (with several "
                "ControlNets, one list each).",
        extra_text=", prompt_2, negative_prompt_2, pooled_prompt_embeds, negative_pooled_prompt_embeds; "
                   "pooled_* must come with their prompt embeddings",
        output="StableDiffusionXLPipelineOutput", tuple="(images,)")

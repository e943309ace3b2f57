"""Stable Diffusion 1.x/2.x video pipelines with cross-frame attention: `CrossFrameVideoPipeline` (ControlNet
image-to-image) and `CrossFrameImg2ImgPipeline` (plain image-to-image). The clip loop is video_loop.py's; this
module only adds what differs per model: the prompt encoding and the output type.
"""
from __future__ import annotations

import torch
from diffusers import StableDiffusionControlNetImg2ImgPipeline, StableDiffusionImg2ImgPipeline

from .video_loop import CALL_DOC, ControlNetFramesMixin, CrossFrameClipMixin, options_from

__all__ = ["CrossFrameVideoPipeline", "CrossFrameImg2ImgPipeline"]


class _StableDiffusionClip(CrossFrameClipMixin):
    """Prompt encoding of the SD 1.x/2.x pipelines, and their common call."""

    def _cfa_encode(self, texts, embeds, cfg, device, parent_kwargs):
        xattn = parent_kwargs.get("cross_attention_kwargs") or {}
        positive, negative = self.encode_prompt(
            texts["prompt"], device, 1, cfg, texts["negative_prompt"], prompt_embeds=embeds["prompt_embeds"],
            negative_prompt_embeds=embeds["negative_prompt_embeds"], lora_scale=xattn.get("scale"),
            clip_skip=parent_kwargs.get("clip_skip"))
        return {"prompt_embeds": positive, "negative_prompt_embeds": negative if cfg else None}

    def _cfa_sd_call(self, method: dict, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                     sizes: dict, **call):
        """method: the cross-frame arguments of __call__ (blocks, anchors, ..., anchor_every) by name; call: the
        rest of _cfa_call's arguments."""
        return self._cfa_call(
            options=options_from(self._cfa_who, **method),
            texts={"prompt": prompt, "negative_prompt": negative_prompt},
            embeds={"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds},
            preprocess_kwargs=sizes, **call)


_SD_DOC = dict(extra_text="", output="StableDiffusionPipelineOutput",
               tuple="(images, nsfw_content_detected)")


class CrossFrameVideoPipeline(ControlNetFramesMixin, _StableDiffusionClip, StableDiffusionControlNetImg2ImgPipeline):
    """ControlNet image-to-image video editing with cross-frame attention (the method as first published).

    Load it as its parent: `CrossFrameVideoPipeline.from_pretrained(model_id, controlnet=controlnet)` or
    `CrossFrameVideoPipeline.from_pipe(pipe)`. Call with `images=[...]` and `control_images=[...]` (one per
    frame; with several ControlNets, one such list per ControlNet).
    """

    _cfa_who = "CrossFrameVideoPipeline"

    @torch.no_grad()
    def __call__(self, prompt=None, images=None, control_images=None, *, frames_per_batch: int = 0,
                 blocks="output", anchors: str = "first+previous", include_self: bool = False,
                 start_percent: float = 0.0, end_percent: float = 1.0, bank_device: str = "auto",
                 bank_dtype: str = "auto", guidance_scale: float = 7.5, negative_prompt=None, prompt_embeds=None,
                 negative_prompt_embeds=None, generator=None, height: int | None = None, width: int | None = None,
                 output_type: str = "pil", return_dict: bool = True, anchor_every: int = 0, **kwargs):
        return self._cfa_sd_call(
            dict(blocks=blocks, anchors=anchors, include_self=include_self, start_percent=start_percent,
                 end_percent=end_percent, bank_device=bank_device, bank_dtype=bank_dtype, anchor_every=anchor_every),
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, {"height": height, "width": width},
            images=images, control_images=control_images, frames_per_batch=frames_per_batch,
            guidance_scale=guidance_scale, generator=generator, output_type=output_type, return_dict=return_dict,
            parent_kwargs=dict(kwargs, height=height, width=width))

    __call__.__doc__ = CALL_DOC.format(control="\n        control_images: one ControlNet image per frame, "
                                               "the frames' size (with several ControlNets, one list each).",
                                       **_SD_DOC)


class CrossFrameImg2ImgPipeline(_StableDiffusionClip, StableDiffusionImg2ImgPipeline):
    """Image-to-image video editing with cross-frame attention, without ControlNet.

    Load it as its parent: `CrossFrameImg2ImgPipeline.from_pretrained(model_id)` or `.from_pipe(pipe)`.
    """

    _cfa_who = "CrossFrameImg2ImgPipeline"

    @torch.no_grad()
    def __call__(self, prompt=None, images=None, *, control_images=None, frames_per_batch: int = 0,
                 blocks="output", anchors: str = "first+previous", include_self: bool = False,
                 start_percent: float = 0.0, end_percent: float = 1.0, bank_device: str = "auto",
                 bank_dtype: str = "auto", guidance_scale: float = 7.5, negative_prompt=None, prompt_embeds=None,
                 negative_prompt_embeds=None, generator=None, output_type: str = "pil", return_dict: bool = True,
                 anchor_every: int = 0, **kwargs):
        return self._cfa_sd_call(
            dict(blocks=blocks, anchors=anchors, include_self=include_self, start_percent=start_percent,
                 end_percent=end_percent, bank_device=bank_device, bank_dtype=bank_dtype, anchor_every=anchor_every),
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, {},
            images=images, control_images=control_images, frames_per_batch=frames_per_batch,
            guidance_scale=guidance_scale, generator=generator, output_type=output_type, return_dict=return_dict,
            parent_kwargs=dict(kwargs))

    __call__.__doc__ = CALL_DOC.format(control="", **_SD_DOC)

"""Video editing pipelines for diffusers with cross-frame attention, driven by the same core as the nodes.

`CrossFrameVideoPipeline` (ControlNet image-to-image) and `CrossFrameImg2ImgPipeline` (plain image-to-image)
edit a clip given as a list of frames: frame 0 with ordinary self-attention, every later frame with the
self-attention keys/values of the first and the previous frame (at the same layer and denoising step), which
keeps the edit's look consistent from frame to frame. See DESIGN.md §1 and README.

Why subclasses: they are the diffusers pipelines they extend (`from_pretrained`, `from_pipe`, schedulers,
offloading, LoRA loading, IP-Adapter and callbacks work unchanged), and the parent's own denoising loop runs
for each chunk of frames. Around it this module only
- installs the cross-frame processors (and a U-Net pre-hook that hands them the timestep) at the start of
  every call and restores the U-Net's processors when the call ends, also on errors;
- encodes the prompt once and hands every chunk its rows of the embeddings;
- draws the whole clip's starting latents once (VAE sample noise, then the img2img noise, in the parent's
  order and with the same generator) and gives every chunk its slice (`prepare_latents` override), so a
  frame's noise does not depend on how the clip is chunked;
- concatenates the chunks' outputs.

Sequential equals batched: with the whole clip in one batch (`frames_per_batch=0`) each frame reads its anchors
from the same U-Net call; in chunks, the first frame and the previous chunk's last frame are recorded per step
and read by the next chunk. With a deterministic scheduler (DDIM with eta=0, Euler, DPM++ 2M) both give the
same frames to float round-off; schedulers that draw noise per step (eta > 0, ancestral, SDE) differ per
chunking.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import StableDiffusionControlNetImg2ImgPipeline, StableDiffusionImg2ImgPipeline
from diffusers.pipelines.stable_diffusion.pipeline_output import StableDiffusionPipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..chunks import ClipPlanner
from .processor import CrossFrameContext, StepHook, install_processors, restore_processors
from ..errors import CrossFrameError
from ..options import CrossFrameOptions
from ..run import FrameRun

__all__ = ["CrossFrameVideoPipeline", "CrossFrameImg2ImgPipeline", "timestep_bounds"]


def timestep_bounds(options: CrossFrameOptions, num_train_timesteps: int):
    """(high, low) timesteps between which cross-frame attention acts, or None for the whole schedule.

    Percents are of the model's noise schedule as in ComfyUI (0 = pure noise, 1 = clean image): percent p is
    timestep (1 - p) * (num_train_timesteps - 1). With img2img strength s the run starts near percent 1 - s.
    """
    if options.full_schedule:
        return None
    last = num_train_timesteps - 1
    high = math.inf if options.start_percent <= 0.0 else (1.0 - options.start_percent) * last
    low = -math.inf if options.end_percent >= 1.0 else (1.0 - options.end_percent) * last
    return high, low


def _frame_list(value, what: str) -> list:
    """A clip as a list of frames: a list/tuple, a batched tensor [F, C, H, W] or array [F, H, W, C]."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, torch.Tensor) and value.ndim == 4:
        return list(value.unbind(0))
    if isinstance(value, np.ndarray) and value.ndim == 4:
        return list(value)
    raise CrossFrameError(f"{what} must be a list of frames (PIL images, arrays or tensors), a tensor "
                          f"[frames, C, H, W] or an array [frames, H, W, C]; got {type(value).__name__}.")


def _frame_size(frame) -> tuple[int, int]:
    """(width, height) of a PIL image, an HWC (or HW) array or a CHW (or 1CHW) tensor."""
    if isinstance(frame, PIL.Image.Image):
        return frame.size
    if isinstance(frame, np.ndarray) and frame.ndim in (2, 3):
        return frame.shape[1], frame.shape[0]
    if isinstance(frame, torch.Tensor) and frame.ndim in (3, 4):
        return frame.shape[-1], frame.shape[-2]
    raise CrossFrameError(f"A frame must be a PIL image, an array (H, W[, C]) or a tensor ([1,] C, H, W); got "
                          f"{type(frame).__name__} of shape {getattr(frame, 'shape', '?')}.")


def _batch_rows(rows: torch.Tensor | None, start: int, end: int, frames: int, what: str):
    if rows is None:
        return None
    if rows.shape[0] == frames:
        return rows[start:end]
    if rows.shape[0] == 1:
        return rows.repeat(end - start, *([1] * (rows.ndim - 1)))
    raise CrossFrameError(f"{what} has {rows.shape[0]} rows for {frames} frames: give one row for the whole clip "
                          "or one per frame.")


def _concat(parts: list):
    first = parts[0]
    if isinstance(first, list):
        return [item for part in parts for item in part]
    if isinstance(first, np.ndarray):
        return np.concatenate(parts, axis=0)
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, dim=0)
    raise TypeError(f"cannot join pipeline outputs of type {type(first).__name__}")


@dataclass
class _Clip:
    """The call in progress: the whole clip's preprocessed frames, their noised latents, the chunk running."""

    images: torch.Tensor
    chunks: list
    generator: object
    current: tuple = (0, 0)
    latents: torch.Tensor | None = None
    timestep: float | None = None


class _CrossFrameMixin:
    """The clip loop shared by both pipelines; the parent pipeline class comes after it in the MRO."""

    _cfa_who = "CrossFrame pipeline"
    _cfa_clip: _Clip | None = None

    # -- hooks into the parent's __call__ ------------------------------------------------------------------
    def prepare_latents(self, image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None,
                        *args, **kwargs):
        clip = self._cfa_clip
        if clip is None:
            return super().prepare_latents(image, timestep, batch_size, num_images_per_prompt, dtype, device,
                                           generator, *args, **kwargs)
        t0 = float(timestep.reshape(-1)[0]) if isinstance(timestep, torch.Tensor) else float(timestep)
        if clip.latents is None:
            clip.latents = self._cfa_noised_latents(clip, timestep.reshape(-1)[:1], dtype, device)
            clip.timestep = t0
        elif t0 != clip.timestep:
            raise CrossFrameError(f"{self._cfa_who}: the chunks start at different timesteps ({clip.timestep} "
                                  f"and {t0}); the scheduler must not change during a call.")
        start, end = clip.current
        return clip.latents[start:end]

    def _cfa_noised_latents(self, clip: _Clip, timestep: torch.Tensor, dtype, device) -> torch.Tensor:
        """The whole clip's img2img starting latents, drawn as the parent pipeline draws them for one batch
        (VAE sample noise for all frames, then the img2img noise for all frames), encoded chunk by chunk so the
        VAE never sees more frames than the U-Net."""
        images = clip.images
        frames = images.shape[0]
        generator = clip.generator
        if images.shape[1] == self.vae.config.latent_channels:
            init = images.to(device=device, dtype=dtype)  # already latents, as the parent accepts
        else:
            means, stds, direct = [], [], []
            for start, end in clip.chunks:
                encoded = self.vae.encode(images[start:end].to(device=device, dtype=dtype))
                if hasattr(encoded, "latent_dist"):
                    means.append(encoded.latent_dist.mean)
                    stds.append(encoded.latent_dist.std)
                elif hasattr(encoded, "latents"):
                    direct.append(encoded.latents)
                else:
                    raise CrossFrameError(f"{self._cfa_who}: the VAE's encoder output has no latents.")
            if direct:
                init = torch.cat(direct)
            else:
                mean, std = torch.cat(means), torch.cat(stds)
                eps = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
                init = mean + std * eps
            init = self.vae.config.scaling_factor * init
        noise = randn_tensor(init.shape, generator=generator, device=device, dtype=dtype)
        return self.scheduler.add_noise(init, noise, timestep.repeat(frames))

    # -- checks -----------------------------------------------------------------------------------------------
    def _cfa_frames(self, images, control_images, generator):
        who = self._cfa_who
        frames = _frame_list(images, "images")
        if not frames:
            raise CrossFrameError(f"{who}: no images given; pass images=[frame0, frame1, ...] (at least one).")
        sizes = {_frame_size(f) for f in frames}
        if len(sizes) > 1:
            raise CrossFrameError(f"{who}: the frames have different sizes {sorted(sizes)}; resize them to one "
                                  "width and height.")
        size = sizes.pop()
        controls = self._cfa_controls(control_images, len(frames), size)
        if isinstance(generator, (list, tuple)) and len(generator) != len(frames):
            raise CrossFrameError(f"{who}: {len(generator)} generators for {len(frames)} frames; pass one "
                                  "generator, or one per frame.")
        return frames, controls

    def _cfa_controls(self, control_images, n_frames, size):
        if control_images is not None:
            raise CrossFrameError(f"{self._cfa_who} has no ControlNet: drop control_images, or use "
                                  "CrossFrameVideoPipeline.")
        return None

    @staticmethod
    def _cfa_check_control_list(controls: list, n_frames: int, size, who: str, what: str):
        if len(controls) != n_frames:
            raise CrossFrameError(f"{who}: {len(controls)} {what} for {n_frames} images; give one control image "
                                  "per frame.")
        bad = sorted({_frame_size(c) for c in controls} - {size})
        if bad:
            raise CrossFrameError(f"{who}: {what} of size {bad} for frames of size {size} (width, height); "
                                  "make the control images the same size as the frames.")

    # -- the clip loop ------------------------------------------------------------------------------------------
    def _cfa_call(self, *, prompt, images, control_images, frames_per_batch, options: CrossFrameOptions,
                  guidance_scale, negative_prompt, prompt_embeds, negative_prompt_embeds, generator,
                  output_type, return_dict, parent_kwargs: dict, preprocess_kwargs: dict):
        who = self._cfa_who
        for name in ("image", "control_image", "latents"):
            if parent_kwargs.get(name) is not None:
                raise CrossFrameError(f"{who}: `{name}` is not an argument here; pass the clip as "
                                      "images=[...] (and control_images=[...]).")
            parent_kwargs.pop(name, None)
        if parent_kwargs.pop("num_images_per_prompt", 1) not in (1, None):
            raise CrossFrameError(f"{who}: num_images_per_prompt must be 1 (one edited image per frame).")
        if (prompt is None) == (prompt_embeds is None):
            raise CrossFrameError(f"{who}: give a prompt or prompt_embeds (one of the two).")
        frames, controls = self._cfa_frames(images, control_images, generator)
        n = len(frames)
        if isinstance(prompt, (list, tuple)) and len(prompt) not in (1, n):
            raise CrossFrameError(f"{who}: {len(prompt)} prompts for {n} frames; give one prompt, or one per frame.")
        if isinstance(prompt, (list, tuple)) and isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * len(prompt)  # diffusers wants both of one type
        planner = ClipPlanner(options, n, frames_per_batch, who)

        # One prompt encoding for the whole clip; each chunk gets its rows.
        for rows, what in ((prompt_embeds, "prompt_embeds"), (negative_prompt_embeds, "negative_prompt_embeds")):
            if rows is not None and rows.shape[0] not in (1, n):
                raise CrossFrameError(f"{who}: {what} has {rows.shape[0]} rows for {n} frames; give one row for "
                                      "the whole clip or one per frame.")
        if prompt_embeds is not None and negative_prompt_embeds is not None \
                and prompt_embeds.shape[0] != negative_prompt_embeds.shape[0]:  # diffusers wants equal rows
            prompt_embeds, negative_prompt_embeds = (r.expand(n, *r.shape[1:])
                                                     for r in (prompt_embeds, negative_prompt_embeds))
        device = self._execution_device
        cfg = guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None
        xattn = parent_kwargs.get("cross_attention_kwargs") or {}
        embeds, negative = self.encode_prompt(
            prompt, device, 1, cfg, negative_prompt, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, lora_scale=xattn.get("scale"),
            clip_skip=parent_kwargs.get("clip_skip"))
        if not cfg:
            negative = None

        clip = _Clip(images=self.image_processor.preprocess(frames, **preprocess_kwargs).to(dtype=torch.float32),
                     chunks=planner.chunks, generator=generator)
        active = timestep_bounds(options, self.scheduler.config.num_train_timesteps)
        context = CrossFrameContext()
        outputs, flagged = [], []
        previous = install_processors(self.unet, context, options.blocks)
        hook = None
        try:
            hook = StepHook(context, lambda: self.do_classifier_free_guidance).attach(self.unet)
            self._cfa_clip = clip
            for index, (start, end) in enumerate(planner.chunks):
                clip.current = (start, end)
                context.run = FrameRun(planner.plan(index, active_sigmas=active))
                chunk_kwargs = dict(parent_kwargs)
                if controls is not None:
                    chunk_kwargs["control_image"] = self._cfa_control_slice(controls, start, end, preprocess_kwargs)
                result = super().__call__(
                    prompt=None, image=frames[start:end], guidance_scale=guidance_scale,
                    prompt_embeds=_batch_rows(embeds, start, end, n, "prompt_embeds"),
                    negative_prompt_embeds=_batch_rows(negative, start, end, n, "negative_prompt_embeds"),
                    generator=generator[start:end] if isinstance(generator, (list, tuple)) else generator,
                    output_type=output_type, return_dict=True, **chunk_kwargs)
                context.run = None
                outputs.append(result.images)
                flagged.append(result.nsfw_content_detected)
                if self.interrupt:  # a callback set `pipe._interrupt`: stop after this chunk
                    break
        finally:
            self._cfa_clip = None
            context.clear()
            if hook is not None:
                hook.remove()
            restore_processors(self.unet, previous)

        images_out = _concat(outputs)
        nsfw = None if any(f is None for f in flagged) else [x for f in flagged for x in f]
        if not return_dict:
            return images_out, nsfw
        return StableDiffusionPipelineOutput(images=images_out, nsfw_content_detected=nsfw)

    def _cfa_control_slice(self, controls, start, end, sizes):
        return controls[start:end]


_CALL_DOC = """
        Edit a clip frame by frame with cross-frame attention.

        images: the clip's frames (list of PIL images / arrays / tensors, or a batched tensor or array), all of
            one size.{control}
        prompt / prompt_embeds (and negative_*): one for the whole clip, or one per frame.
        frames_per_batch: 0 = the whole clip in one U-Net batch (fastest); k > 0 = chunks of k frames in order,
            each reading the first frame and the previous chunk's last frame (same result with a deterministic
            scheduler, memory bounded by k).
        blocks: U-Net block groups whose self-attention is cross-frame: "output" (up blocks, the classic
            choice), "input", "middle" or a mix such as "input+output".
        anchors: "first+previous" (the method), "first" or "previous".
        include_self: also attend to the frame's own tokens (less ghosting on big motion, less consistency).
        start_percent / end_percent: part of the noise schedule (0 = noise, 1 = clean) where it acts.
        bank_device / bank_dtype: where the chunk-boundary frames are kept ("auto" or "cpu"; "auto" or a dtype).
        generator: one generator for the clip, or one per frame. Frame i's noise does not depend on
            frames_per_batch.
        Everything else (strength, num_inference_steps, guidance_scale, eta, output_type, callbacks, ...) is the
        parent pipeline's; callbacks run per chunk with step indices restarting at 0. Setting
        `pipe._interrupt = True` in a callback stops after the current chunk: only its frames and those before
        are returned.

        Returns StableDiffusionPipelineOutput (images: one per frame, as output_type says), or a tuple
        (images, nsfw_content_detected) when return_dict=False. Raises ValueError (CrossFrameError) on bad input.
"""


class CrossFrameVideoPipeline(_CrossFrameMixin, StableDiffusionControlNetImg2ImgPipeline):
    """ControlNet image-to-image video editing with cross-frame attention (the method as first published).

    Load it as its parent: `CrossFrameVideoPipeline.from_pretrained(model_id, controlnet=controlnet)` or
    `CrossFrameVideoPipeline.from_pipe(pipe)`. Call with `images=[...]` and `control_images=[...]` (one per
    frame; with several ControlNets, one such list per ControlNet).
    """

    _cfa_who = "CrossFrameVideoPipeline"

    def _cfa_controls(self, control_images, n_frames, size):
        who = self._cfa_who
        if control_images is None:
            raise CrossFrameError(f"{who}: control_images is missing; give one control image per frame.")
        if hasattr(self.controlnet, "nets"):  # several ControlNets: one list of frames per ControlNet
            lists = list(control_images) if isinstance(control_images, (list, tuple)) else []
            if len(lists) != len(self.controlnet.nets):
                raise CrossFrameError(f"{who}: {len(self.controlnet.nets)} ControlNets need as many lists of "
                                      f"control images; got {len(lists)}.")
            lists = [_frame_list(c, "control_images") for c in lists]
            for c in lists:
                self._cfa_check_control_list(c, n_frames, size, who, "control images")
            return lists
        controls = _frame_list(control_images, "control_images")
        self._cfa_check_control_list(controls, n_frames, size, who, "control images")
        return controls

    def _cfa_control_slice(self, controls, start, end, sizes):
        if hasattr(self.controlnet, "nets"):
            # The parent takes one image *batch* per ControlNet, not nested lists: hand it tensors in [0, 1].
            return [self.control_image_processor.preprocess(c[start:end], **sizes).to(torch.float32)
                    for c in controls]
        return controls[start:end]

    @torch.no_grad()
    def __call__(self, prompt=None, images=None, control_images=None, *, frames_per_batch: int = 0,
                 blocks="output", anchors: str = "first+previous", include_self: bool = False,
                 start_percent: float = 0.0, end_percent: float = 1.0, bank_device: str = "auto",
                 bank_dtype: str = "auto", guidance_scale: float = 7.5, negative_prompt=None, prompt_embeds=None,
                 negative_prompt_embeds=None, generator=None, height: int | None = None, width: int | None = None,
                 output_type: str = "pil", return_dict: bool = True, **kwargs):
        options = CrossFrameOptions(blocks=blocks, anchors=anchors, include_self=include_self,
                                    start_percent=start_percent, end_percent=end_percent,
                                    bank_device=bank_device, bank_dtype=bank_dtype, who=self._cfa_who)
        return self._cfa_call(
            prompt=prompt, images=images, control_images=control_images, frames_per_batch=frames_per_batch,
            options=options, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, generator=generator,
            output_type=output_type, return_dict=return_dict,
            parent_kwargs=dict(kwargs, height=height, width=width),
            preprocess_kwargs={"height": height, "width": width})

    __call__.__doc__ = _CALL_DOC.format(control="\n        control_images: one ControlNet image per frame, "
                                                "the frames' size (with several ControlNets, one list each).")


class CrossFrameImg2ImgPipeline(_CrossFrameMixin, StableDiffusionImg2ImgPipeline):
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
                 **kwargs):
        options = CrossFrameOptions(blocks=blocks, anchors=anchors, include_self=include_self,
                                    start_percent=start_percent, end_percent=end_percent,
                                    bank_device=bank_device, bank_dtype=bank_dtype, who=self._cfa_who)
        return self._cfa_call(
            prompt=prompt, images=images, control_images=control_images, frames_per_batch=frames_per_batch,
            options=options, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, generator=generator,
            output_type=output_type, return_dict=return_dict, parent_kwargs=dict(kwargs), preprocess_kwargs={})

    __call__.__doc__ = _CALL_DOC.format(control="")

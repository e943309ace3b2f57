"""The clip loop shared by the cross-frame video pipelines (SD in pipeline_sd.py, SDXL in pipeline_sdxl.py).

A pipeline class is `class P(<mixins>, <diffusers pipeline>)`; the parent's own denoising loop runs ONCE for the
whole clip (one scheduler: noise drawn per step, by ancestral and SDE schedulers, is drawn once for every frame).
Around it this module
- installs the cross-frame processors (and a U-Net pre-hook that hands them the timestep) at the start of
  every call and restores the U-Net's processors when the call ends, also on errors;
- encodes the prompt once (a per-model hook: `_cfa_encode`) and hands the parent one row per frame;
- splits each U-Net and ControlNet call into windows of `frames_per_batch` frames in clip order (a diffusers
  hook, model_windows.py; the VAE then decodes frame by frame), the frames of each window told to the
  processors; frame i attends to frames held by earlier windows of the same U-Net call through the core's
  window carry, so the window size never changes the result, only the memory a call needs;
- draws the whole clip's starting latents as the parent does for one batch (VAE sample noise, then the img2img
  noise, with the same generator), encoding the frames window by window (`prepare_latents` override).
"""
from __future__ import annotations

import math

import numpy as np
import PIL.Image
import torch
from diffusers.utils.torch_utils import randn_tensor

from cross_frame_attention.errors import CrossFrameError
from cross_frame_attention.options import CrossFrameOptions, block_names
from cross_frame_attention.planner import RunPlanner
from cross_frame_attention.run import FrameRun

from .model_windows import CallWindows
from .processor import BLOCK_GROUPS, CrossFrameContext, StepHook, install_processors, restore_processors


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


def frame_list(value, what: str) -> list:
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


def frame_size(frame) -> tuple[int, int]:
    """(width, height) of a PIL image, an HWC (or HW) array or a CHW (or 1CHW) tensor."""
    if isinstance(frame, PIL.Image.Image):
        return frame.size
    if isinstance(frame, np.ndarray) and frame.ndim in (2, 3):
        return frame.shape[1], frame.shape[0]
    if isinstance(frame, torch.Tensor) and frame.ndim in (3, 4):
        return frame.shape[-1], frame.shape[-2]
    raise CrossFrameError(f"A frame must be a PIL image, an array (H, W[, C]) or a tensor ([1,] C, H, W); got "
                          f"{type(frame).__name__} of shape {getattr(frame, 'shape', '?')}.")


def clip_rows(rows: torch.Tensor | None, frames: int, what: str):
    """A tensor with one row per frame: the per-frame tensor itself, or its single row repeated."""
    if rows is None or rows.shape[0] == frames:
        return rows
    if rows.shape[0] == 1:
        return rows.repeat(frames, *([1] * (rows.ndim - 1)))
    raise CrossFrameError(f"{what} has {rows.shape[0]} rows for {frames} frames: give one row for the whole clip "
                          "or one per frame.")


def even_text(texts: dict, n: int, who: str) -> dict:
    """Check the text arguments (prompt, negative_prompt, ...: a string, None or a list of 1 or n) and give
    them one shape, as diffusers wants: all lists of one length when any is a list."""
    for name, value in texts.items():
        if isinstance(value, (list, tuple)) and len(value) not in (1, n):
            what = "prompts" if name == "prompt" else f"entries in {name}"
            raise CrossFrameError(f"{who}: {len(value)} {what} for {n} frames; give one, or one per frame.")
    lengths = {len(v) for v in texts.values() if isinstance(v, (list, tuple))}
    if not lengths:
        return dict(texts)
    length = max(lengths)
    out = {}
    for name, value in texts.items():
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and len(value) != length:
            value = list(value) * length  # one entry: the same for every frame
        out[name] = list(value) if value is not None else None
    return out


def even_embeds(embeds: dict, n: int, who: str) -> dict:
    """Check the given embedding tensors (one row or one per frame) and, when their row counts differ, expand
    the single rows to n (diffusers' prompt encoders want equal rows)."""
    for name, rows in embeds.items():
        if rows is not None and rows.shape[0] not in (1, n):
            raise CrossFrameError(f"{who}: {name} has {rows.shape[0]} rows for {n} frames; give one row for "
                                  "the whole clip or one per frame.")
    counts = {rows.shape[0] for rows in embeds.values() if rows is not None}
    if len(counts) < 2:
        return dict(embeds)
    return {name: rows.expand(n, *rows.shape[1:]) if rows is not None and rows.shape[0] == 1 else rows
            for name, rows in embeds.items()}


class CrossFrameClipMixin:
    """The clip loop; the parent pipeline class comes after it in the MRO.

    A subclass provides `_cfa_encode` (prompt encoding for the whole clip), and may override `_cfa_vae_encode` /
    `_cfa_scale_latents` where its parent's `prepare_latents` differs, and `_cfa_controls` /
    `_cfa_control_images` (ControlNetFramesMixin).
    """

    _cfa_who = "CrossFrame pipeline"
    _cfa_clip: CallWindows | None = None   # the windows of the call in progress

    # -- per-model hooks --------------------------------------------------------------------------------------
    def _cfa_encode(self, texts: dict, embeds: dict, cfg: bool, device, parent_kwargs: dict) -> dict:
        """The whole clip's prompt encoding: {parent __call__ argument name: tensor (1 or n rows) or None}."""
        raise NotImplementedError

    def _cfa_vae_encode(self, pixels: torch.Tensor, dtype):
        return self.vae.encode(pixels.to(dtype=dtype))

    def _cfa_scale_latents(self, init: torch.Tensor, device, dtype) -> torch.Tensor:
        return self.vae.config.scaling_factor * init

    # -- hooks into the parent's __call__ ------------------------------------------------------------------
    def prepare_latents(self, image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None,
                        *args, **kwargs):
        windows = self._cfa_clip
        if windows is None:
            return super().prepare_latents(image, timestep, batch_size, num_images_per_prompt, dtype, device,
                                           generator, *args, **kwargs)
        return self._cfa_noised_latents(image, windows.bounds, timestep.reshape(-1)[:1], dtype, device, generator)

    def _cfa_noised_latents(self, images: torch.Tensor, windows: list, timestep: torch.Tensor, dtype, device,
                            generator) -> torch.Tensor:
        """The whole clip's img2img starting latents, drawn as the parent pipeline draws them for one batch
        (VAE sample noise for all frames, then the img2img noise for all frames), encoded window by window so
        the VAE never sees more frames than the U-Net."""
        frames = images.shape[0]
        if images.shape[1] == self.vae.config.latent_channels:
            init = images.to(device=device, dtype=dtype)  # already latents, as the parent accepts
        else:
            means, stds, direct = [], [], []
            for start, end in windows:
                encoded = self._cfa_vae_encode(images[start:end].to(device=device), dtype)
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
            init = self._cfa_scale_latents(init.to(dtype), device, dtype)
        noise = randn_tensor(init.shape, generator=generator, device=device, dtype=dtype)
        return self.scheduler.add_noise(init, noise, timestep.repeat(frames))

    # -- checks -----------------------------------------------------------------------------------------------
    def _cfa_frames(self, images, control_images, generator):
        who = self._cfa_who
        frames = frame_list(images, "images")
        if not frames:
            raise CrossFrameError(f"{who}: no images given; pass images=[frame0, frame1, ...] (at least one).")
        sizes = {frame_size(f) for f in frames}
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

    def _cfa_control_images(self, controls, sizes):
        return controls

    # -- the clip loop ------------------------------------------------------------------------------------------
    def _cfa_call(self, *, images, control_images, frames_per_batch, options: CrossFrameOptions, guidance_scale,
                  texts: dict, embeds: dict, generator, output_type, return_dict, parent_kwargs: dict,
                  preprocess_kwargs: dict):
        """texts: prompt (first) and the other text arguments of the parent (negative_prompt, prompt_2, ...);
        embeds: the embedding tensors the caller gave (prompt_embeds first), by parent argument name."""
        who = self._cfa_who
        for name in ("image", "control_image", "latents"):
            if parent_kwargs.get(name) is not None:
                raise CrossFrameError(f"{who}: `{name}` is not an argument here; pass the clip as "
                                      "images=[...] (and control_images=[...]).")
            parent_kwargs.pop(name, None)
        if parent_kwargs.pop("num_images_per_prompt", 1) not in (1, None):
            raise CrossFrameError(f"{who}: num_images_per_prompt must be 1 (one edited image per frame).")
        if (texts["prompt"] is None) == (embeds["prompt_embeds"] is None):
            raise CrossFrameError(f"{who}: give a prompt or prompt_embeds (one of the two).")
        if frames_per_batch < 0:
            raise CrossFrameError(f"{who}: frames_per_batch is {frames_per_batch}; use 0 for the whole clip in one "
                                  "U-Net call, or a positive number of frames per window.")
        frames, controls = self._cfa_frames(images, control_images, generator)
        n = len(frames)
        texts = even_text(texts, n, who)
        embeds = even_embeds(embeds, n, who)
        planner = RunPlanner(options, n, who)   # the core's planner, as the nodes use it

        # One prompt encoding for the whole clip, one row per frame.
        device = self._execution_device
        cfg = guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None
        encoded = self._cfa_encode(texts, embeds, cfg, device, parent_kwargs)
        call_kwargs = dict(parent_kwargs)
        call_kwargs.update({name: clip_rows(rows, n, name) for name, rows in encoded.items()})
        if controls is not None:
            call_kwargs["control_image"] = self._cfa_control_images(controls, preprocess_kwargs)

        active = timestep_bounds(options, self.scheduler.config.num_train_timesteps)
        context = CrossFrameContext()
        windows = CallWindows(n, frames_per_batch, who)
        previous = install_processors(self.unet, context, options.blocks)
        hook = None
        try:
            hook = StepHook(context, lambda: self.do_classifier_free_guidance).attach(self.unet)
            windows.split(self.unet, on_window=context.set_window)
            if getattr(self, "controlnet", None) is not None:
                windows.split(self.controlnet)
            windows.decode_frame_by_frame(self.vae)
            self._cfa_clip = windows
            context.run = FrameRun(planner.plan(active_sigmas=active))
            return super().__call__(prompt=None, image=frames, guidance_scale=guidance_scale, generator=generator,
                                    output_type=output_type, return_dict=return_dict, **call_kwargs)
        finally:
            self._cfa_clip = None
            context.clear()
            windows.undo()
            if hook is not None:
                hook.remove()
            restore_processors(self.unet, previous)


class ControlNetFramesMixin:
    """control_images for a ControlNet pipeline: one per frame (with several ControlNets, one list each),
    checked against the frames."""

    @staticmethod
    def _cfa_check_control_list(controls: list, n_frames: int, size, who: str, what: str):
        if len(controls) != n_frames:
            raise CrossFrameError(f"{who}: {len(controls)} {what} for {n_frames} images; give one control image "
                                  "per frame.")
        bad = sorted({frame_size(c) for c in controls} - {size})
        if bad:
            raise CrossFrameError(f"{who}: {what} of size {bad} for frames of size {size} (width, height); "
                                  "make the control images the same size as the frames.")

    def _cfa_controls(self, control_images, n_frames, size):
        who = self._cfa_who
        if control_images is None:
            raise CrossFrameError(f"{who}: control_images is missing; give one control image per frame.")
        if hasattr(self.controlnet, "nets"):  # several ControlNets: one list of frames per ControlNet
            lists = list(control_images) if isinstance(control_images, (list, tuple)) else []
            if len(lists) != len(self.controlnet.nets):
                raise CrossFrameError(f"{who}: {len(self.controlnet.nets)} ControlNets need as many lists of "
                                      f"control images; got {len(lists)}.")
            lists = [frame_list(c, "control_images") for c in lists]
            for c in lists:
                self._cfa_check_control_list(c, n_frames, size, who, "control images")
            return lists
        controls = frame_list(control_images, "control_images")
        self._cfa_check_control_list(controls, n_frames, size, who, "control images")
        return controls

    def _cfa_control_images(self, controls, sizes):
        if hasattr(self.controlnet, "nets"):
            # The parent takes one image *batch* per ControlNet, not nested lists: hand it tensors in [0, 1].
            return [self.control_image_processor.preprocess(c, **sizes).to(torch.float32) for c in controls]
        return controls


def options_from(who: str, blocks, anchors, include_self, start_percent, end_percent, bank_device,
                 bank_dtype, anchor_every: int = 0) -> CrossFrameOptions:
    options = CrossFrameOptions(blocks=blocks, anchors=anchors, include_self=include_self,
                                start_percent=start_percent, end_percent=end_percent, bank_device=bank_device,
                                bank_dtype=bank_dtype, anchor_every=anchor_every, who=who)
    if not block_names(options.blocks) <= set(BLOCK_GROUPS):
        raise CrossFrameError(f"{who}: blocks={blocks!r} is not a block choice of a diffusers U-Net; use "
                              f"{', '.join(BLOCK_GROUPS)} or several joined by '+'.")
    return options


CALL_DOC = """
        Edit a clip frame by frame with cross-frame attention.

        images: the clip's frames (list of PIL images / arrays / tensors, or a batched tensor or array), all of
            one size.{control}
        prompt / prompt_embeds (and negative_*{extra_text}): one for the whole clip, or one per frame.
        frames_per_batch: how many frames each U-Net (and ControlNet) call evaluates: 0 = the whole
            clip in one call (fastest); k > 0 = windows of k frames in clip order within each denoising step,
            frame by frame exactly as one call (any scheduler, ancestral and SDE ones too: one scheduler loop
            runs over the whole clip); memory bounded by k.
        anchor_every: 0 = every frame attends to frame 0 and the previous frame; N > 0 = keyframe anchors: frames
            attend to the latest keyframe (frame 0, N, 2N, ...) and the previous frame.
        blocks: U-Net block groups whose self-attention is cross-frame: "output" (up blocks, the classic
            choice), "input", "middle" or a mix such as "input+output".
        anchors: "first+previous" (the method), "first" or "previous".
        include_self: also attend to the frame's own tokens (less ghosting on big motion, less consistency).
        start_percent / end_percent: part of the noise schedule (0 = noise, 1 = clean) where it acts.
        bank_device / bank_dtype: where recorded anchor frames are kept ("auto" or "cpu"; "auto" or a dtype). The
            pipelines record none (windows pass their anchors on within each U-Net call); kept for the
            options' shared validation.
        generator: one generator for the clip, or one per frame. Frame i's noise does not depend on
            frames_per_batch.
        Everything else (strength, num_inference_steps, guidance_scale, eta, output_type, callbacks, ...) is the
        parent pipeline's, and acts as there: callbacks run once per denoising step for the whole clip; setting
        `pipe._interrupt = True` in a callback skips the remaining steps of every frame.

        Returns {output} (images: one per frame, as output_type says), or a tuple {tuple} when
        return_dict=False. Raises ValueError (CrossFrameError) on bad input.
"""

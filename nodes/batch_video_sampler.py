"""Batch Video Sampler: a whole clip sampled with cross-frame attention, in one batch or in chunks."""
from __future__ import annotations

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..attention import ClipPlanner, CrossFrameError, CrossFrameOptions, model_reference
from .chunk_conditioning import conditioning_for_chunk
from .comfy_patch import active_sigmas, patch_model, resolve_blocks
from .cross_frame_patch import latent_resolution
from .schema import (CATEGORY, CrossFrameStateType, anchors_input, bank_device_input, bank_dtype_input,
                     blocks_input, include_self_input, percent_inputs)

NAME = "Batch Video Sampler"


class BatchVideoSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CFA_BatchVideoSampler",
            display_name=NAME,
            category=CATEGORY,
            description="KSampler for a clip: every frame's self-attention takes its keys/values from the "
                        "first frame (or a reference state) and the previous frame at the same layer and "
                        "step, so the edit stays consistent over time. Same noise as KSampler for the same "
                        "seed and latent batch.",
            inputs=[
                io.Model.Input("model", tooltip="The model used to denoise the frames."),
                io.Conditioning.Input("positive", tooltip="What the frames should show. ControlNet hints "
                                                          "with one image per frame follow their frames."),
                io.Conditioning.Input("negative", tooltip="What the frames should not show."),
                io.Latent.Input("latent_image", tooltip="The clip: one latent per frame, in order."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seed of the noise; frame k gets the same noise KSampler would give it."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Denoising steps."),
                io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="Sampling algorithm. Ancestral and SDE samplers add fresh noise per "
                                       "call, so chunked results differ slightly from one batch."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="Noise schedule."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of each frame is re-generated: about 0.5-0.7 edits a video "
                                       "while keeping its motion; 1.0 ignores the input frames."),
                io.Int.Input("frames_per_batch", default=0, min=0, max=4096,
                             tooltip="Frames sampled at once. 0 = the whole clip in one batch (fastest). "
                                     "Lower it when the clip does not fit in memory: chunks run in order "
                                     "and carry the previous frame across, with the same result."),
                anchors_input(),
                include_self_input(),
                blocks_input(),
                *percent_inputs(),
                bank_device_input(),
                bank_dtype_input(),
                io.Boolean.Input("output_state", default=False,
                                 tooltip="Keep the clip's first and last frame attention as the state output, "
                                         "so a following Batch Video Sampler continues this clip seamlessly. "
                                         "Costs memory (two frames per block per step)."),
                CrossFrameStateType.Input("state", optional=True,
                                          tooltip="Optional anchor: a reference from Store Reference "
                                                  "Attention, or the state output of an earlier Batch Video "
                                                  "Sampler to continue its clip."),
                io.Latent.Input("reference_latent", optional=True,
                                tooltip="With a state from Store Reference Attention: the LATENT its reference "
                                        "sampler produced. This link makes the reference run first, and "
                                        "re-runs this node when the reference changes."),
            ],
            outputs=[
                io.Latent.Output(display_name="LATENT", tooltip="The denoised clip, same frames and order."),
                CrossFrameStateType.Output(display_name="state",
                                           tooltip="The clip's anchors for a continuation (empty unless "
                                                   "output_state is on)."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler,
                denoise, frames_per_batch, anchors, include_self, blocks, start_percent, end_percent,
                bank_device, bank_dtype, output_state, state=None, reference_latent=None) -> io.NodeOutput:
        options = CrossFrameOptions(blocks=resolve_blocks(model, blocks), anchors=anchors, include_self=include_self,
                                    start_percent=start_percent, end_percent=end_percent,
                                    bank_device=bank_device, bank_dtype=bank_dtype, who=NAME)
        latent_resolution(latent_image, NAME, "latent_image")
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        n_frames = latent.shape[0]
        if state is not None:
            if state.needs_reference_latent and reference_latent is None:
                raise CrossFrameError(
                    f"{NAME}: the state comes from {state.producer}; also connect its reference sampler's "
                    "LATENT output to reference_latent, so the reference is sampled first and a changed "
                    "reference re-runs this node instead of reusing a cached clip.")
            if reference_latent is not None:
                shape = latent_resolution(reference_latent, NAME, "reference_latent")
                state = state.for_reference(reference_latent["samples"], NAME)
                state.check_usable(NAME, latent_shape=shape)
            state.check_usable(NAME, model=model.model, latent_shape=latent.shape[1:], blocks=options.blocks)
        planner = ClipPlanner(options, n_frames, frames_per_batch, NAME, reference=state,
                              keep_state=output_state, latent_shape=tuple(latent.shape[1:]),
                              model_ref=model_reference(model.model))
        # Noise for the whole clip at once, then sliced: frame k's noise never depends on chunking.
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        mask = latent_image.get("noise_mask")
        if mask is not None:
            # One mask per frame before slicing (core would otherwise repeat a short mask batch per chunk).
            mask = comfy.utils.repeat_to_batch_size(mask.reshape((-1, 1) + tuple(mask.shape[-2:])), n_frames)
        sigma_bounds = active_sigmas(model, options)
        chunks = planner.chunks
        pbar = comfy.utils.ProgressBar(steps * len(chunks))
        previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
        results = []
        for index, (start, end) in enumerate(chunks):
            comfy.model_management.throw_exception_if_processing_interrupted()
            plan = planner.plan(index, sigma_bounds)
            patched = patch_model(model, options.blocks, NAME, lambda guider, lat, sig, plan=plan: plan)
            memo = {}  # one memo for both: positive and negative may share ControlNet chains
            pos = conditioning_for_chunk(positive, start, end, n_frames, NAME, memo)
            neg = conditioning_for_chunk(negative, start, end, n_frames, NAME, memo)
            chunk_mask = None if mask is None else mask[start:end]
            samples = comfy.sample.sample(
                patched, noise[start:end], steps, cfg, sampler_name, scheduler, pos, neg,
                latent[start:end], denoise=denoise, noise_mask=chunk_mask,
                callback=_progress(pbar, previewer, index, len(chunks)),
                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
            results.append(samples)
        out = latent_image.copy()
        out["samples"] = results[0] if len(results) == 1 else torch.cat(results)
        return io.NodeOutput(out, planner.result_state())


def _progress(pbar, previewer, chunk_index: int, n_chunks: int):
    def callback(step, x0, x, total_steps):
        preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
        pbar.update_absolute(chunk_index * total_steps + step + 1, total_steps * n_chunks, preview)
    return callback

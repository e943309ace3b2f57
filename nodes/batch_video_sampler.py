"""Batch Video Sampler: a whole clip sampled with cross-frame attention in one sampler pass, each model
evaluation in windows of frames when the clip does not fit at once."""
from __future__ import annotations

import logging

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..attention import CrossFrameError, CrossFrameOptions, RunPlanner, model_reference
from .comfy_patch import active_sigmas, patch_model, resolve_blocks
from .cross_frame_patch import latent_resolution
from .schema import (CATEGORY, CrossFrameStateType, anchors_input, bank_device_input, bank_dtype_input,
                     blocks_input, include_self_input, percent_inputs)
from .window_controls import check_conditioning_hints

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
                               tooltip="Sampling algorithm. Any sampler gives the same clip whatever the "
                                       "window size (one sampler pass draws the whole clip's noise)."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="Noise schedule."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of each frame is re-generated: about 0.5-0.7 edits a video "
                                       "while keeping its motion; 1.0 ignores the input frames."),
                io.Int.Input("frames_per_batch", default=0, min=0, max=4096,
                             tooltip="Frames the model evaluates at once. 0 = auto: the whole clip when it "
                                     "fits in the memory ComfyUI reports free, else the largest window that "
                                     "does (the log says which). The clip is still sampled in one pass and the "
                                     "result does not depend on this: windows run in clip order inside each "
                                     "step and pass the previous frame on. With a model that has context "
                                     "windows (Context Windows (Manual)), leave it at 0 to use those."),
                anchors_input(),
                include_self_input(),
                blocks_input(),
                *percent_inputs(),
                bank_device_input(),
                bank_dtype_input(),
                io.Boolean.Input("output_state", default=False,
                                 tooltip="Keep the clip's anchor (first frame, or latest keyframe) and last "
                                         "frame attention at every step as the state output, so a following "
                                         "Batch Video Sampler continues this clip seamlessly. Costs memory "
                                         "(two frames per block per step; see bank_device)."),
                io.Int.Input("anchor_every", default=0, min=0, max=4096, optional=True,
                             tooltip="Keyframe anchors for long clips. 0 = every frame attends to the first "
                                     "frame (or the reference) and the previous frame. N > 0: frames attend "
                                     "to the latest keyframe (frame 0, N, 2N, ...) and the previous frame, so "
                                     "the look can follow scene changes instead of staying pinned to frame 0; "
                                     "each keyframe continues from the frame before it. Try one keyframe per "
                                     "shot or every 16-48 frames. Optional, so API prompts written before it "
                                     "existed still run."),
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
                bank_device, bank_dtype, output_state, anchor_every=0, state=None,
                reference_latent=None) -> io.NodeOutput:
        options = CrossFrameOptions(blocks=resolve_blocks(model, blocks, NAME), anchors=anchors,
                                    include_self=include_self,
                                    start_percent=start_percent, end_percent=end_percent,
                                    bank_device=bank_device, bank_dtype=bank_dtype, anchor_every=anchor_every,
                                    who=NAME)
        if frames_per_batch < 0:
            raise CrossFrameError(f"{NAME}: frames_per_batch is {frames_per_batch}; use 0 (auto: the whole clip "
                                  "when it fits in memory) or a positive number of frames per window.")
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
        check_conditioning_hints(positive, n_frames, NAME)
        check_conditioning_hints(negative, n_frames, NAME)
        # The run's anchors (a reference or a continued clip) and, with output_state, the clip's anchor and
        # last frame recorded at every step for a continuation (windows within a step need no recording).
        kept = RunPlanner(options, n_frames, NAME, state=state, keep_state=output_state,
                          latent_shape=tuple(latent.shape[1:]), model_ref=model_reference(model.model))
        sigma_bounds = active_sigmas(model, options)

        def plan_for_run(guider, lat, sigmas):
            return kept.plan(sigma_bounds)

        def run_finished(run):
            if run.carry.peak_bytes:
                logging.info("%s: carried %.1f MB between windows within a model evaluation (nothing kept "
                             "across steps).", NAME, run.carry.peak_bytes / 2**20)

        patched = patch_model(model, options.blocks, NAME, plan_for_run, window_size=frames_per_batch,
                              run_finished=run_finished)
        # One sampler pass over the whole clip: KSampler's noise for the same seed and batch, and ancestral
        # or SDE noise drawn once for every frame, so windows never change the result.
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        mask = latent_image.get("noise_mask")
        if mask is not None:
            # One mask per frame (core would otherwise repeat a short mask batch per window).
            mask = comfy.utils.repeat_to_batch_size(mask.reshape((-1, 1) + tuple(mask.shape[-2:])), n_frames)
        callback = latent_preview.prepare_callback(patched, steps)
        samples = comfy.sample.sample(
            patched, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=denoise,
            noise_mask=mask, callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        out = latent_image.copy()
        out["samples"] = samples
        return io.NodeOutput(out, kept.result_state())

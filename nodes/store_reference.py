"""Store Reference Attention: sampling with its MODEL records the reference's self-attention inputs."""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..attention import AttentionBank, CrossFrameError, CrossFrameOptions, CrossFrameState, RunPlan
from ..attention import model_reference
from .comfy_patch import patch_model, resolve_blocks
from .schema import CATEGORY, CrossFrameStateType, bank_device_input, bank_dtype_input, blocks_input

NAME = "Store Reference Attention"


class StoreReferenceAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CFA_StoreReferenceAttention",
            display_name=NAME,
            category=CATEGORY,
            description="Wraps a model so that sampling ONE latent with it (KSampler, KSamplerAdvanced, "
                        "SamplerCustom...) records that image's self-attention inputs at every step, for "
                        "cond and uncond separately. Feed the state to Cross-Frame Attention Patch or Batch "
                        "Video Sampler so other frames take their keys/values from this reference.",
            inputs=[
                io.Model.Input("model", tooltip="The model that will sample the reference image."),
                blocks_input(),
                bank_device_input(),
                bank_dtype_input(),
                io.Int.Input("keep_recordings", default=1, min=1, max=16, optional=True,
                             tooltip="How many recent reference runs stay recorded. ComfyUI can serve an "
                                     "earlier reference from its cache (you switched a seed back); the frames "
                                     "then need that run's recording. With 1, they stop with an error asking "
                                     "to re-run the reference; more keeps earlier ones, each costing one "
                                     "reference's memory. Optional, so API prompts written before it "
                                     "existed still run."),
            ],
            outputs=[
                io.Model.Output(display_name="model",
                                tooltip="Sample the reference (a single image) with this model. Each new "
                                        "sampling run replaces what was recorded."),
                CrossFrameStateType.Output(display_name="state",
                                           tooltip="The reference's recorded attention, filled when the "
                                                   "model above is sampled."),
            ],
        )

    @classmethod
    def execute(cls, model, blocks, bank_device, bank_dtype, keep_recordings=1) -> io.NodeOutput:
        options = CrossFrameOptions(blocks=resolve_blocks(model, blocks, NAME), bank_device=bank_device,
                                    bank_dtype=bank_dtype, who=NAME)
        state = CrossFrameState(options.blocks, NAME)
        state.needs_reference_latent = True
        state.keep_recordings = keep_recordings

        def plan_for_run(guider, latent_image, sigmas):
            if latent_image.shape[0] != 1:
                raise CrossFrameError(
                    f"{NAME}: the reference latent holds {latent_image.shape[0]} images; sample exactly one "
                    "with this model (use 'Latent From Batch' to pick the reference frame, or sample the "
                    "whole clip with Batch Video Sampler instead).")
            bank = AttentionBank(f"the reference recorded by {NAME}", device=options.bank_torch_device(),
                                 dtype=options.bank_torch_dtype())
            bank.latent_shape = tuple(latent_image.shape[1:])
            bank.pixels_per_latent = getattr(guider.model_patcher.model.latent_format,
                                             "spacial_downscale_ratio", 8)
            bank.model_ref = model_reference(guider.model_patcher.model)
            return RunPlan(frames=1, options=options, store=bank, who=NAME)

        def run_succeeded(plan, samples):
            # Every run starts a fresh bank, published only once it is complete: an interrupted or failed
            # reference run never leaves a half-filled state behind. The fingerprint of the LATENT it produced
            # lets readers tell this recording from an earlier run's that ComfyUI's cache may hand them.
            state.publish(plan.store, samples)
            logging.info("%s: recorded %d steps of %s blocks, %.1f MB.", NAME, len(plan.store.steps),
                         "+".join(sorted(options.blocks)), state.nbytes() / 2**20)

        patched = patch_model(model, options.blocks, NAME, plan_for_run, run_succeeded)
        return io.NodeOutput(patched, state)

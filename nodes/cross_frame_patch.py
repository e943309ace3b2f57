"""Cross-Frame Attention Patch: frames sampled with its MODEL attend to [reference; previous frame]."""
from __future__ import annotations

from comfy_api.latest import io

from ..attention import CrossFrameError, CrossFrameOptions, RunPlan
from .comfy_patch import active_sigmas, patch_model
from .schema import (CATEGORY, CrossFrameStateType, anchors_input, include_self_input, percent_inputs)

NAME = "Cross-Frame Attention Patch"


def latent_resolution(latent: dict, who: str, what: str) -> tuple:
    """The per-frame latent shape of an image latent batch: [frames, C, H, W], or [frames, C, 1, H, W] for
    models with video-shaped image latents (Qwen-Image)."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None or samples.ndim not in (4, 5):
        raise CrossFrameError(f"{who}: {what} is not an image latent batch (expected [frames, channels, "
                              "height, width]); connect a LATENT from a sampler or VAE Encode.")
    if samples.ndim == 5 and samples.shape[2] != 1:
        raise CrossFrameError(
            f"{who}: {what} holds one video of {samples.shape[2]} latent frames ({list(samples.shape)}), not "
            "a batch of images. Qwen-Image's VAE Encode turns an image batch into one video: encode the "
            "frames one by one (or use a latent batch [frames, 16, 1, height, width]).")
    if samples.shape[0] == 0:
        raise CrossFrameError(f"{who}: {what} is empty; give it at least one frame.")
    return tuple(samples.shape[1:])


class CrossFrameAttentionPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CFA_CrossFrameAttentionPatch",
            display_name=NAME,
            category=CATEGORY,
            description="Wraps a model so that a batch of consecutive frames sampled with it takes its "
                        "self-attention keys/values from the stored reference and the previous frame "
                        "(batch frame 0 uses the reference twice). Works with any sampler node.",
            inputs=[
                io.Model.Input("model", tooltip="The model that will sample the frames (the same checkpoint "
                                                "that sampled the reference)."),
                CrossFrameStateType.Input("state", tooltip="From Store Reference Attention (or a Batch Video "
                                                           "Sampler's state output)."),
                io.Latent.Input("reference_latent",
                                tooltip="The LATENT the reference sampler produced. This link makes the "
                                        "reference run first and lets the node check its size."),
                anchors_input(),
                include_self_input(),
                *percent_inputs(),
            ],
            outputs=[io.Model.Output(display_name="model",
                                     tooltip="Sample the frames (in order, as one batch) with this model.")],
        )

    @classmethod
    def execute(cls, model, state, reference_latent, anchors, include_self, start_percent,
                end_percent) -> io.NodeOutput:
        options = CrossFrameOptions(blocks=state.blocks, anchors=anchors, include_self=include_self,
                                    start_percent=start_percent, end_percent=end_percent, who=NAME)
        reference_shape = latent_resolution(reference_latent, NAME, "reference_latent")
        reference_samples = reference_latent["samples"]
        state.for_reference(reference_samples, NAME).check_usable(NAME, model=model.model,
                                                                  latent_shape=reference_shape)
        sigma_bounds = active_sigmas(model, options)

        def plan_for_run(guider, latent_image, sigmas):
            # Checked again per run: the state may have been refilled since this node ran.
            anchor = state.for_reference(reference_samples, NAME)
            anchor.check_usable(NAME, model=guider.model_patcher.model, latent_shape=latent_image.shape[1:])
            return RunPlan(frames=latent_image.shape[0], options=options, first=anchor.first,
                           prev=anchor.last, active_sigmas=sigma_bounds, who=NAME)

        return io.NodeOutput(patch_model(model, options.blocks, NAME, plan_for_run))

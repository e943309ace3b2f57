"""Flow Guided Fusion: a MODEL whose denoised prediction of each frame is blended, at every step in range,
with the previous frame's fused prediction carried along the source clip's optical flow (Rerender-A-Video's
cross-frame latent fusion). Through public extension points only: a post-CFG function (a list in the model
options, so it chains with other packs' functions) and an OUTER_SAMPLE wrapper that prepares the flow for
the latent's size once per sampling run. Works with any sampler node, sampler and model family, and with
any windows: ComfyUI fuses the windows of a model evaluation before CFG, so the hook sees the whole clip.
"""
from __future__ import annotations

from comfy.patcher_extension import WrappersMP
from comfy_api.latest import io

from ..attention import CrossFrameError
from ..attention.fusion import (DEFAULT_OCCLUSION_THRESHOLD, DEFAULT_STRENGTH, FUSION_ANCHORS, FusionOptions,
                                FusionRun, step_active)
from .comfy_patch import active_sigmas
from .schema import CATEGORY, FlowType, percent_inputs
from .source_flow import flow_of_frames

NAME = "Flow Guided Fusion"
WRAPPER_KEY = "cross_frame_flow_fusion"


def clip_latent_size(latent, frames: int, who: str) -> tuple[int, int]:
    """(height, width) of an image latent batch whose frames match the flow's; an error otherwise."""
    shape = tuple(latent.shape)
    if len(shape) == 5 and shape[2] == 1:
        shape = shape[:2] + shape[3:]
    if len(shape) != 4:
        raise CrossFrameError(f"{who}: the latent sampled is {list(latent.shape)}, not a batch of image latents "
                              "(one per frame); fusion works on image models sampling a clip as a batch.")
    if shape[0] != frames:
        raise CrossFrameError(
            f"{who}: the latent clip has {shape[0]} frame(s) but the source flow has {frames}. Give the flow "
            "the same frames that were encoded into the latent (same count and order); sample other batches "
            "(e.g. a reference image) with the model before Flow Guided Fusion.")
    return shape[2], shape[3]


def fused_model(model, flow, options: FusionOptions):
    """A clone of `model` that fuses each sampling run's denoised predictions along `flow` (a ClipFlow)."""
    who = options.who
    if options.with_first:
        flow.ensure_first()   # its cost belongs to this node, not to the first sampling step
    bounds = active_sigmas(model, options)
    current: dict = {}        # the sampling run in progress (the closure survives model-option deep copies)

    def outer_sample(executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        height, width = clip_latent_size(latent_image, flow.frames, who)
        latent_flow = flow.at_latent(height, width, options.occlusion_threshold, options.with_first, who)
        run = FusionRun(latent_flow, options.strength, options.with_first)
        current["run"] = run
        try:
            return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        finally:
            current.pop("run", None)

    def post_cfg(args):
        denoised = args["denoised"]
        run = current.get("run")
        if run is None:
            raise CrossFrameError(f"{who}: the fusion hook ran outside a sampling run of its model (a node "
                                  "dropped its sampling wrapper). Sample the MODEL output of Flow Guided "
                                  "Fusion directly with a sampler node.")
        if options.strength == 0:
            return denoised
        if bounds is not None and not step_active(float(args["sigma"].reshape(-1)[0]), bounds):
            return denoised
        if denoised.shape[0] != run.flow.frames:
            raise CrossFrameError(f"{who}: a model evaluation returned {denoised.shape[0]} frames for a clip of "
                                  f"{run.flow.frames}; sample the clip as one latent batch.")
        return run.fuse(denoised)

    patched = model.clone()
    patched.set_model_sampler_post_cfg_function(post_cfg)
    patched.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample)
    return patched


class FlowGuidedFusion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CFA_FlowGuidedFusion",
            display_name=NAME,
            category=CATEGORY,
            description="Removes flicker that attention alone leaves: at every denoising step, each frame's "
                        "prediction is blended with the previous frame's, carried along the source clip's "
                        "optical flow, wherever that motion is reliable (Rerender-A-Video's cross-frame "
                        "latent fusion). Sample the clip, as one latent batch, with the MODEL it returns "
                        "(Batch Video Sampler or KSampler).",
            inputs=[
                io.Model.Input("model", tooltip="The model that samples the clip (e.g. after Cross-Frame "
                                                "Attention Patch, or the checkpoint's for Batch Video Sampler)."),
                io.Float.Input("strength", default=DEFAULT_STRENGTH, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the previous frame's prediction replaces each frame's where "
                                       "the motion is reliable. 0 = off (exactly the unfused result); 1 = copy "
                                       "it (steadiest, but new detail can't appear there)."),
                *percent_inputs("fusion", "lets the last steps re-sharpen detail, with a little more "
                                          "flicker"),
                io.Combo.Input("anchor", options=list(FUSION_ANCHORS), default=FUSION_ANCHORS[0],
                               tooltip="What each frame is fused with. previous: the frame before it (along the "
                                       "flow t-1 -> t). previous+first: also frame 0 along the flow 0 -> t, like "
                                       "Rerender-A-Video (less drift of the look over a clip; costs one more "
                                       "flow per frame, and helps only where frame 0's content is still "
                                       "visible)."),
                io.Float.Input("occlusion_threshold", default=DEFAULT_OCCLUSION_THRESHOLD, min=0.05, max=100.0,
                               step=0.05,
                               tooltip="Tolerated forward-backward flow error, in source pixels: pixels whose "
                                       "motion does not round-trip within it (occluded, revealed, or badly "
                                       "tracked) are left unfused. Lower: fewer ghosts; higher: less flicker."),
                FlowType.Input("flow", optional=True,
                               tooltip="The source clip's motion from Source Flow. Or connect the frames to "
                                       "source instead (one of the two)."),
                io.Image.Input("source", optional=True,
                               tooltip="The source clip's frames (the IMAGE encoded into the latent clip): the "
                                       "flow is computed from them here. Or connect a Source Flow to flow "
                                       "instead (one of the two)."),
            ],
            outputs=[io.Model.Output(display_name="model",
                                     tooltip="Sample the clip (in order, as one latent batch) with this model.")],
        )

    @classmethod
    def execute(cls, model, strength, start_percent, end_percent, anchor, occlusion_threshold, flow=None,
                source=None) -> io.NodeOutput:
        options = FusionOptions(strength=strength, start_percent=start_percent, end_percent=end_percent,
                                anchor=anchor, occlusion_threshold=occlusion_threshold, who=NAME)
        if flow is None and source is None:
            raise CrossFrameError(f"{NAME}: no source given. Connect the source clip's frames to 'source', or a "
                                  "Source Flow node to 'flow', so the fusion knows the clip's motion.")
        if flow is not None and source is not None:
            raise CrossFrameError(f"{NAME}: both 'flow' and 'source' are connected; connect only one (the "
                                  "frames to 'source', or Source Flow's output to 'flow').")
        if flow is None:
            flow = flow_of_frames(source, NAME)
        return io.NodeOutput(fused_model(model, flow, options))

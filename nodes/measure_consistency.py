"""Measure Temporal Consistency: how much a clip flickers, frame by frame, next to its source.

The measurement itself is ComfyUI-free (../consistency); this node checks the inputs, picks the flow, drives
ComfyUI's progress bar and Cancel, and shows the plot and a one-line summary on the node.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import comfy.model_management
import comfy.utils
import nodes as comfy_nodes  # ComfyUI's nodes.py (its node registry); our package is never importable as `nodes`
from comfy_api.latest import io, ui

from ..attention import CrossFrameError
from .schema import CATEGORY

NAME = "Measure Temporal Consistency"
# Core's optical-flow model type (ComfyUI 0.30.0+: "Load Optical Flow Model", a torchvision RAFT checkpoint).
# A type is only a name on the wire; declaring it here does not need core to have it.
OpticalFlowType = io.Custom("OPTICAL_FLOW")
CORE_FLOW_LOADER = "OpticalFlowLoader"
REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
PIP_NAMES = {"cv2": "opencv-python-headless", "matplotlib": "matplotlib"}  # import name -> what pip installs
# Core's fixed context-window schedules (the uniform and looped ones move their windows every step).
WINDOW_SCHEDULES = ["standard_static", "batched"]


def core_has_optical_flow() -> bool:
    """True when the running ComfyUI registered a loader for OPTICAL_FLOW models. Asked each time the schema
    is built, so the input appears exactly where a model can be connected to it (and 0.3.64 never shows an
    input nothing can feed)."""
    return CORE_FLOW_LOADER in getattr(comfy_nodes, "NODE_CLASS_MAPPINGS", {})


def _measurement():
    """The measurement package, imported on first use: OpenCV and matplotlib come from the pack's
    requirements.txt, and a ComfyUI installed without them must still load the pack's other nodes."""
    try:
        from .. import consistency
        from ..consistency import plot  # noqa: F401  (fails here, not half-way, if matplotlib is missing)
    except ImportError as exc:
        missing = PIP_NAMES.get((exc.name or "").split(".")[0], exc.name or str(exc))
        raise CrossFrameError(
            f"{NAME}: a package it needs is missing ({missing}). Install the pack's requirements into "
            f"ComfyUI's Python: \"{sys.executable}\" -m pip install -r \"{REQUIREMENTS}\", then restart "
            "ComfyUI.") from exc
    return consistency


def _size(frames: torch.Tensor) -> str:
    return f"{frames.shape[2]}x{frames.shape[1]}"


def check_frames(images: torch.Tensor, source: torch.Tensor | None) -> None:
    if images.ndim != 4 or images.shape[0] < 2:
        count = images.shape[0] if images.ndim == 4 else 1
        raise CrossFrameError(f"{NAME}: the result has {count} frame; connect a clip of at least 2 frames "
                              "(e.g. the IMAGE of VAE Decode after Batch Video Sampler).")
    if source is None:
        return
    if source.shape[0] != images.shape[0]:
        raise CrossFrameError(
            f"{NAME}: the source has {source.shape[0]} frames and the result {images.shape[0]}; connect the "
            "frames the result was made from, the same number of them (trim the longer one with "
            "'Image From Batch').")
    if source.shape[1:3] != images.shape[1:3]:
        raise CrossFrameError(
            f"{NAME}: the source frames are {_size(source)} and the result's {_size(images)}; scale the source "
            f"to {_size(images)} (e.g. 'Upscale Image' to width {images.shape[2]}, height {images.shape[1]}, "
            "crop center) before measuring.")


def check_windows(length: int, overlap: int, schedule: str) -> None:
    if length > 0 and schedule == "standard_static" and overlap >= length:
        raise CrossFrameError(
            f"{NAME}: the window overlap ({overlap}) must be less than the window length ({length}); type the "
            "context_length and context_overlap of your Context Windows (Manual) node (its overlap is smaller "
            "than its length), or set window_length to 0 to measure without windows.")


def window_joins(measure, frames: int, length: int, overlap: int, schedule: str, scale: int):
    """(joins in video frames, a note saying how they were placed), or (None, "") without windows."""
    if length <= 0:
        return None, ""
    joins = measure.joins.window_joins(frames, length, overlap, schedule, temporal_scale=scale)
    latents = measure.joins.latent_frames_for(frames, scale)
    per = "1 video frame" if scale == 1 else f"{scale} video frames"
    note = (f"windows of {length} latent frames overlapping {overlap if schedule != 'batched' else 0} "
            f"({schedule}), {per} per latent frame: {latents} latent frames")
    if (frames - 1) % scale:
        note += (f" (the clip's {frames} frames are not 1 + {scale}*n: joins placed as if it were the start of "
                 "such a clip)")
    note += f", {len(joins)} join(s), frames of the clip" if joins else \
        f"; one window covers all {latents} latent frames: no join"
    return joins, note


class MeasureTemporalConsistency(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        inputs = [
            io.Image.Input("images", tooltip="The clip to score: frames of a result, in order (e.g. VAE Decode "
                                             "of a Batch Video Sampler or KSampler batch)."),
            io.Boolean.Input("occlusion_mask", default=True,
                             tooltip="Score only pixels visible in both frames (forward-backward flow check): "
                                     "what appears or disappears behind moving things is not counted as "
                                     "flicker. Off: every pixel counts (raw warp error; about half the time)."),
            io.String.Input("label", default="", tooltip="Title of the plot, e.g. 'with cross-frame attention'. "
                                                         "Empty: 'Temporal consistency'."),
            io.Image.Input("source", optional=True,
                           tooltip="The frames the result was made from (same count and size). The motion "
                                   "is measured on them, and they are scored the same way for scale: a result "
                                   "close to its source's curves is as steady as the input. Without it the "
                                   "motion comes from the result itself."),
            io.Int.Input("window_length", default=0, min=0, max=4096, optional=True,
                         tooltip="Where the clip was made in context windows: the window length in LATENT frames, "
                                 "the context_length of core's Context Windows (Manual). The plot marks each "
                                 "join and the text lists the jump there, per frame pair against the change "
                                 "inside a single window. 0: no windows. (WAN Context Windows (Manual) takes "
                                 "video frames: type (context_length - 1) / 4 + 1 here.)"),
            io.Int.Input("window_overlap", default=0, min=0, max=4096, optional=True,
                         tooltip="The window overlap in LATENT frames, the context_overlap of Context Windows "
                                 "(Manual). (WAN Context Windows (Manual): its context_overlap / 4.)"),
            io.Combo.Input("window_schedule", options=WINDOW_SCHEDULES, default="standard_static", optional=True,
                           tooltip="The context_schedule of Context Windows (Manual). Only these two place their "
                                   "windows the same way every step; batched ignores the overlap."),
            io.Int.Input("latent_temporal_scale", default=1, min=1, max=16, optional=True,
                         tooltip="Video frames per latent frame, to place the joins on the decoded frames: 1 for "
                                 "image models (SD, SDXL, Flux: one latent per frame), 4 for Wan (latent 0 is "
                                 "video frame 0, latent j is video frames 4j-3 to 4j)."),
        ]
        if core_has_optical_flow():
            inputs.append(OpticalFlowType.Input(
                "optical_flow", optional=True,
                tooltip="Optional: an optical-flow model from 'Load Optical Flow Model' (RAFT) instead of the "
                        "built-in OpenCV DIS flow. More accurate on large motion, much slower on CPU."))
        return io.Schema(
            node_id="CFA_MeasureTemporalConsistency",
            display_name=NAME,
            category=CATEGORY,
            description="Scores how much a clip flickers, frame by frame: the error left after warping each "
                        "frame's predecessor onto it along the optical flow, the change of mean brightness, "
                        "and the drift of brightness and colour from frame 0, next to the source's own scores; "
                        "with window settings, the jump at each context-window join. Shows a plot and a "
                        "summary; outputs the plot and the numbers (JSON).",
            inputs=inputs,
            outputs=[
                io.Image.Output(display_name="plot", tooltip="Per-frame curves, result against source, with the "
                                                             "summary in the legend."),
                io.String.Output(display_name="json", tooltip="Every per-frame score and the summary, as JSON "
                                                              "(for programs; units: 0-255 grey levels)."),
                io.String.Output(display_name="summary", tooltip="The summary shown on the node: one line, then one "
                                                                 "line per window join when windows are set."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, occlusion_mask=True, label="", source=None, window_length=0, window_overlap=0,
                window_schedule="standard_static", latent_temporal_scale=1, optical_flow=None) -> io.NodeOutput:
        images = images[..., :3]
        source = None if source is None else source[..., :3]
        check_frames(images, source)
        check_windows(window_length, window_overlap, window_schedule)
        measure = _measurement()
        if optical_flow is not None:
            comfy.model_management.load_model_gpu(optical_flow)
            flow = measure.RaftLikeFlow(optical_flow.model, device=optical_flow.load_device,
                                        name="OPTICAL_FLOW model")
        else:
            flow = measure.DisFlow()

        # One step per frame pair, one for the plot. Cancel is honoured after every pair.
        progress = comfy.utils.ProgressBar(images.shape[0])
        comfy.model_management.throw_exception_if_processing_interrupted()

        def on_frame(done, total):
            progress.update(1)
            comfy.model_management.throw_exception_if_processing_interrupted()

        try:
            joins, note = window_joins(measure, images.shape[0], window_length, window_overlap, window_schedule,
                                       latent_temporal_scale)
            report = measure.measure_consistency(images, source=source, flow=flow,
                                                 mask_occlusions=occlusion_mask, on_frame=on_frame,
                                                 window_joins=joins, join_note=note)
        except ValueError as exc:
            if isinstance(exc, CrossFrameError):
                raise
            raise CrossFrameError(f"{NAME}: {exc}.") from exc
        plot = torch.from_numpy(measure.render_plot(report, title=label)).float().div(255.0)[None]
        progress.update(1)
        summary = report.text()
        shown = {**ui.PreviewImage(plot, cls=cls).as_dict(), **ui.PreviewText(summary).as_dict()}
        return io.NodeOutput(plot, report.to_json(), summary, ui=shown)

"""Inputs shared by several nodes, with their tooltips, and the custom type that carries the state."""
from __future__ import annotations

from comfy_api.latest import io

from ..attention import ANCHOR_CHOICES, BANK_DEVICE_CHOICES, BANK_DTYPE_CHOICES
from .families import block_choices, blocks_tooltip

CATEGORY = "video/cross-frame attention"
# Carries a CrossFrameState (recorded reference or clip attention) between our nodes.
CrossFrameStateType = io.Custom("CFA_STATE")
# Carries a ClipFlow (attention/fusion.py): a source clip's optical flow, for Flow Guided Fusion.
FlowType = io.Custom("CFA_FLOW")


def blocks_input():
    # Choices and tooltip come from the family registry (families/), so a new family shows up here.
    return io.Combo.Input("blocks", options=list(block_choices()), default="auto", tooltip=blocks_tooltip())


def anchors_input():
    return io.Combo.Input(
        "anchors", options=list(ANCHOR_CHOICES), default="first+previous",
        tooltip="What each frame's self-attention takes its keys/values from. first+previous: the first (or "
                "reference) frame and the frame before it (the published method). first: only the first "
                "frame (style/identity lock, more drift on motion). previous: only the frame before "
                "(smooth but appearance can drift over long clips).")


def include_self_input():
    return io.Boolean.Input(
        "include_self", default=False,
        tooltip="Also let each frame attend to its own tokens ('loose' mode): less ghosting on large motion, "
                "somewhat weaker consistency.")


def percent_inputs(what: str = "cross-frame attention",
                   early: str = "keeps the overall layout consistent and lets fine detail follow each frame"):
    return [
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                       tooltip=f"Part of the denoising schedule where {what} acts: where it "
                               "starts (0 = the first, noisiest step)."),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                       tooltip=f"Where {what} stops (1 = the last step). Ending early {early}."),
    ]


def bank_device_input():
    return io.Combo.Input(
        "bank_device", options=list(BANK_DEVICE_CHOICES), default="auto",
        tooltip="Where recorded attention inputs are kept. auto: on the model's device (fastest). cpu: in "
                "system RAM (saves GPU memory on long clips, SDXL, or many blocks; a little slower).")


def bank_dtype_input():
    return io.Combo.Input(
        "bank_dtype", options=list(BANK_DTYPE_CHOICES), default="auto",
        tooltip="Precision of recorded attention inputs. auto: the model's compute dtype. float16/bfloat16 "
                "halve the memory of a float32 model.")

"""Inputs shared by several nodes, with their tooltips, and the custom type that carries the state."""
from __future__ import annotations

from comfy_api.latest import io

from ..attention import ANCHOR_CHOICES, BANK_DEVICE_CHOICES, BANK_DTYPE_CHOICES, BLOCK_CHOICES

CATEGORY = "video/cross-frame attention"
# Carries a CrossFrameState (recorded reference or clip attention) between our nodes.
CrossFrameStateType = io.Custom("CFA_STATE")
# Carries a ClipFlow (attention/fusion.py): a source clip's optical flow, for Flow Guided Fusion.
FlowType = io.Custom("CFA_FLOW")


def blocks_input():
    return io.Combo.Input(
        "blocks", options=list(BLOCK_CHOICES), default="auto",
        tooltip="Blocks whose self-attention looks at the anchor frames. auto: the model's default -- SD U-Nets: "
                "'output' (the decoder, the method's classic choice: strong consistency, little structure "
                "change); Flux.1/Flux.2: 'single' (the single-stream blocks); Qwen-Image: the second half of "
                "its blocks. U-Nets: input / middle / output or a mix; adding input or middle makes frames "
                "follow the anchors more closely and costs more memory. Flux: double / single / "
                "double+single. Qwen-Image: double (all 60 blocks) or double[30:] (blocks 30-59). More blocks: "
                "closer to the anchors, slower.")


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

"""Cross-frame attention (self-attention K/V replacement) for temporally consistent video edits.

Torch only: importing this package never imports ComfyUI or diffusers, so both front ends share it.
"""
from .assembly import anchor_count, assemble_kv
from .bank import AttentionBank
from .errors import CrossFrameError
from .options import ANCHOR_CHOICES, BANK_DEVICE_CHOICES, BANK_DTYPE_CHOICES, CrossFrameOptions, parse_blocks
from .planner import RunPlanner, make_bank
from .run import FrameRun, RunPlan
from .state import CrossFrameState, model_reference
from .steps import SigmaIndex
from .windows import window_bounds

__all__ = [
    "ANCHOR_CHOICES", "BANK_DEVICE_CHOICES", "BANK_DTYPE_CHOICES",
    "AttentionBank", "CrossFrameError", "CrossFrameOptions", "CrossFrameState", "FrameRun",
    "RunPlan", "RunPlanner", "SigmaIndex", "anchor_count", "assemble_kv", "make_bank", "model_reference",
    "parse_blocks", "window_bounds",
]

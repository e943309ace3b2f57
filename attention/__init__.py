"""Cross-frame attention (self-attention K/V replacement) for temporally consistent video edits.

Torch only: importing this package never imports ComfyUI or diffusers, so both front ends share it.
"""
from .assembly import anchor_count, assemble_kv
from .bank import AttentionBank
from .chunks import ClipPlanner, chunk_bounds
from .errors import CrossFrameError
from .options import ANCHOR_CHOICES, BANK_DEVICE_CHOICES, BANK_DTYPE_CHOICES, CrossFrameOptions, parse_blocks
from .run import FrameRun, RunPlan
from .state import CrossFrameState, model_reference
from .steps import SigmaIndex

__all__ = [
    "ANCHOR_CHOICES", "BANK_DEVICE_CHOICES", "BANK_DTYPE_CHOICES",
    "AttentionBank", "ClipPlanner", "CrossFrameError", "CrossFrameOptions", "CrossFrameState", "FrameRun",
    "RunPlan", "SigmaIndex", "anchor_count", "assemble_kv", "chunk_bounds", "model_reference",
    "parse_blocks",
]

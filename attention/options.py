"""What the user chose: which layers, which anchors, which part of the schedule, where the bank lives."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .errors import CrossFrameError

# Blocks are named by the front end that knows the model (the ComfyUI family registry, nodes/families/; the
# diffusers processor): the core only parses a choice into parts "name" or "name[a:b]" (an index range read
# like a Python slice over that kind's blocks) and answers "is this layer chosen?". "auto" is resolved by the
# front end before options are built.
AUTO_BLOCKS = "auto"
_PART = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d*):(\d*)\])?$")

ANCHOR_CHOICES = ("first+previous", "first", "previous")
BANK_DEVICE_CHOICES = ("auto", "cpu")
BANK_DTYPE_CHOICES = ("auto", "float16", "bfloat16", "float32")
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _block_error(choice, who: str) -> CrossFrameError:
    return CrossFrameError(
        f"{who}: blocks={choice!r} is not a block choice; name the model's block groups joined by '+' "
        "(for example output, input+output, single, double[30:]), or choose auto.")


def check_block_parts(parts, choice, who: str) -> frozenset[str]:
    """The parts as a frozenset, if each is a block name with an optional index range."""
    parts = frozenset(parts)
    if not parts or not all(_PART.match(p) for p in parts):
        raise _block_error(choice, who)
    return parts


def parse_blocks(choice: str, who: str = "Cross-frame attention") -> frozenset[str]:
    """"input+output" -> {"input", "output"}; "double[30:]+single" -> {"double[30:]", "single"}."""
    if str(choice).strip() == AUTO_BLOCKS:
        raise CrossFrameError(f"{who}: blocks='auto' depends on the model; the front end must resolve it "
                              "before the options are built.")
    return check_block_parts((part.strip() for part in str(choice).split("+") if part.strip()), choice, who)


def block_names(blocks) -> frozenset[str]:
    """The block kinds a choice names, ranges dropped: {"double[30:]", "single"} -> {"double", "single"}."""
    return frozenset(m.group(1) for m in map(_PART.match, blocks) if m is not None)


def block_selector(blocks):
    """(block kind, index) -> whether that layer is chosen. A plain part takes every index of its kind; a
    part "double[a:b]" takes double blocks a <= index < b (either bound may be left out)."""
    whole, ranges = set(), []
    for part in blocks:
        m = _PART.match(part)
        if m is None or m.group(2) is None:
            whole.add(part if m is None else m.group(1))
        else:
            start = int(m.group(2)) if m.group(2) else 0
            stop = int(m.group(3)) if m.group(3) else None
            ranges.append((m.group(1), start, stop))

    def selects(group, index) -> bool:
        if group in whole:
            return True
        for name, start, stop in ranges:
            if name == group and index >= start and (stop is None or index < stop):
                return True
        return False
    return selects


@dataclass(frozen=True)
class CrossFrameOptions:
    """Options of the cross-frame attention method, shared by the ComfyUI nodes and the diffusers pipeline.

    anchors: which earlier frames the keys/values come from ("first+previous" is the method as published).
    include_self: also attend to the frame's own tokens ("loose" mode: less ghosting on large motion,
        weaker consistency).
    start_percent / end_percent: the part of the denoising schedule where cross-frame attention acts;
        outside it the frames use ordinary self-attention.
    bank_device / bank_dtype: where stored attention inputs live ("auto" = the model's device and dtype).
    anchor_every: keyframe anchors: with N > 0, frame i's first anchor is the latest keyframe at or before it
        (frame k*N, k = i // N) instead of frame 0; 0 = frame 0 (or the reference) anchors the whole clip.
    who: the node (or call) that chose them, named in every error message; not part of the options' value.
    """

    # "output": the decoder, the method's classic choice, named alike by the diffusers processor and SD U-Nets
    blocks: frozenset = frozenset({"output"})
    anchors: str = "first+previous"
    include_self: bool = False
    start_percent: float = 0.0
    end_percent: float = 1.0
    bank_device: str = "auto"
    bank_dtype: str = "auto"
    anchor_every: int = 0
    who: str = field(default="Cross-frame attention", compare=False)

    def __post_init__(self):
        who = self.who
        if isinstance(self.blocks, str):
            object.__setattr__(self, "blocks", parse_blocks(self.blocks, who))
        else:
            object.__setattr__(self, "blocks", check_block_parts(self.blocks, sorted(self.blocks), who))
        if self.anchors not in ANCHOR_CHOICES:
            raise CrossFrameError(f"{who}: anchors={self.anchors!r}; use one of {', '.join(ANCHOR_CHOICES)}.")
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise CrossFrameError(
                f"{who}: start_percent={self.start_percent} and end_percent={self.end_percent}: need "
                "0 <= start_percent <= end_percent <= 1: lower start_percent or raise end_percent.")
        if self.bank_device not in BANK_DEVICE_CHOICES:
            raise CrossFrameError(f"{who}: bank_device={self.bank_device!r}; use one of {BANK_DEVICE_CHOICES}.")
        if not isinstance(self.anchor_every, int) or self.anchor_every < 0:
            raise CrossFrameError(f"{who}: anchor_every={self.anchor_every!r}; use 0 (frame 0 anchors the whole "
                                  "clip) or a positive number of frames between keyframes.")
        if self.bank_dtype not in BANK_DTYPE_CHOICES:
            raise CrossFrameError(f"{who}: bank_dtype={self.bank_dtype!r}; use one of {BANK_DTYPE_CHOICES}.")

    @property
    def uses_first(self) -> bool:
        return "first" in self.anchors

    @property
    def uses_previous(self) -> bool:
        return "previous" in self.anchors

    @property
    def full_schedule(self) -> bool:
        return self.start_percent <= 0.0 and self.end_percent >= 1.0

    def bank_torch_dtype(self) -> torch.dtype | None:
        """None keeps the dtype the model computes in."""
        return None if self.bank_dtype == "auto" else _DTYPES[self.bank_dtype]

    def bank_torch_device(self) -> torch.device | None:
        """None keeps the banks on the model's device."""
        return None if self.bank_device == "auto" else torch.device(self.bank_device)

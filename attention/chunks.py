"""Sampling a clip in chunks of frames: which anchors each chunk reads and which frames it keeps."""
from __future__ import annotations

from .bank import AttentionBank
from .errors import CrossFrameError
from .options import CrossFrameOptions
from .run import RunPlan
from .state import CrossFrameState


def chunk_bounds(n_frames: int, frames_per_batch: int, who: str = "frames_per_batch") -> list[tuple[int, int]]:
    """[(start, end), ...] covering n_frames; frames_per_batch 0 (or more than the clip) = one chunk."""
    if n_frames < 1:
        raise CrossFrameError(f"{who}: the latent batch is empty; give it at least one frame.")
    if frames_per_batch < 0:
        raise CrossFrameError(f"{who}: frames_per_batch is {frames_per_batch}; use 0 for the whole clip in "
                              "one batch, or a positive number of frames per batch.")
    size = n_frames if frames_per_batch == 0 else min(frames_per_batch, n_frames)
    return [(s, min(s + size, n_frames)) for s in range(0, n_frames, size)]


class ClipPlanner:
    """Plans the runs of one clip: chunk 0 anchors on the reference (or on its own frame 0), every later
    chunk on the same anchor plus the previous chunk's last frame, recorded per step while that chunk ran.

    Sequential equals batched: frame i needs frame i-1's attention input at the same step, which is in the
    same batch except at chunk boundaries, so only the boundary frame is kept between chunks.
    """

    def __init__(self, options: CrossFrameOptions, n_frames: int, frames_per_batch: int, who: str,
                 reference: CrossFrameState | None = None, keep_state: bool = False,
                 latent_shape=None, model_ref=None):
        self.options = options
        self.who = who
        self.chunks = chunk_bounds(n_frames, frames_per_batch, who)
        self.reference = reference
        self.keep_state = keep_state
        self.latent_shape = latent_shape
        self.model_ref = model_ref
        self._first = reference.first if reference is not None else None
        self._prev = reference.last if reference is not None else None
        self._next = 0

    def _bank(self, label: str) -> AttentionBank:
        opts = self.options
        bank = AttentionBank(label, device=opts.bank_torch_device(), dtype=opts.bank_torch_dtype())
        bank.latent_shape, bank.model_ref = self.latent_shape, self.model_ref
        return bank

    def plan(self, index: int, active_sigmas=None) -> RunPlan:
        """The plan of chunk `index`; chunks must be planned (and sampled) in order."""
        if index != self._next:
            raise CrossFrameError(f"{self.who}: chunks must be sampled in order (asked for {index}, "
                                  f"next is {self._next}).")
        start, end = self.chunks[index]
        more = index + 1 < len(self.chunks)
        opts = self.options
        want_first = self._first is None and (self.keep_state or (more and opts.uses_first))
        want_last = self.keep_state or (more and opts.uses_previous)
        plan = RunPlan(
            frames=end - start, options=opts, first=self._first, prev=self._prev,
            record_first=self._bank(f"the first frame of the clip ({self.who})") if want_first else None,
            record_last=self._bank(f"frame {end - 1} of the clip ({self.who})") if want_last else None,
            active_sigmas=active_sigmas, who=self.who)
        # What the next chunk reads; the bank it replaces is dropped here, so at most one boundary frame
        # (plus the anchor) is held however long the clip is.
        if plan.record_first is not None:
            self._first = plan.record_first
        self._prev = plan.record_last
        self._next += 1
        return plan

    def result_state(self) -> CrossFrameState:
        """The clip's state after its last chunk: a following run continues from it. Left empty (with a
        message saying how to fill it) unless the planner was asked to keep it."""
        if not self.keep_state:
            return CrossFrameState(self.options.blocks, self.who,
                                   empty_hint="Turn on output_state there to keep the clip's anchors.")
        state = CrossFrameState(self.options.blocks, self.who)
        state.first, state.last, state.runs = self._first, self._prev, 1
        return state

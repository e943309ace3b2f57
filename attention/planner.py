"""Planning a clip's sampling run, for every front end (the ComfyUI nodes and the diffusers pipelines).

A clip is sampled in ONE sampler pass; each model evaluation may be split into windows of frames in clip order,
which FrameRun and the window carry handle inside the evaluation (windows.py), so nothing about windows is
planned here. What spans sampling runs is: the anchors a run reads (a stored reference, or the state of an
earlier clip it continues) and, when the caller keeps the clip's state, the frames it records at every step for
a later run: the clip's anchor (frame 0, or its latest keyframe) and its last frame.
"""
from __future__ import annotations

from .anchors import AnchorPolicy
from .bank import AttentionBank
from .errors import CrossFrameError
from .options import CrossFrameOptions
from .run import RunPlan
from .state import CrossFrameState

EMPTY_STATE_HINT = "Turn on output_state there to keep the clip's anchors."


def make_bank(options: CrossFrameOptions, label: str, latent_shape=None, model_ref=None) -> AttentionBank:
    """An empty bank where the options keep banks (bank_device / bank_dtype), tagged with what it belongs to:
    the latent shape sampled and a weak reference to the model, so a reader can check both."""
    bank = AttentionBank(label, device=options.bank_torch_device(), dtype=options.bank_torch_dtype())
    bank.latent_shape, bank.model_ref = latent_shape, model_ref
    return bank


class RunPlanner:
    """The plan of each sampling run of a clip of `n_frames` frames, and the state it leaves.

    state: what the run anchors on: a reference (state.first) or a clip it continues (state.first, the clip's
        anchor, and state.last, its last frame); None = the clip's own frame 0.
    keep_state: record the clip's anchor (its latest keyframe, or frame 0) and last frame at every step, so that
        result_state() can anchor a continuation. Without it nothing is recorded.
    latent_shape / model_ref: written into the banks recorded, for a reader's checks.

    `plan()` is called at the start of every sampling run (a sampler may be re-run: a fresh plan, fresh banks).
    """

    def __init__(self, options: CrossFrameOptions, n_frames: int, who: str, state: CrossFrameState | None = None,
                 keep_state: bool = False, latent_shape=None, model_ref=None):
        if n_frames < 1:
            raise CrossFrameError(f"{who}: the latent batch is empty; give it at least one frame.")
        self.options, self.n_frames, self.who = options, n_frames, who
        self.state, self.keep_state = state, keep_state
        self.latent_shape, self.model_ref = latent_shape, model_ref
        # What a continuation of this clip anchors on (the anchor policy's answer, anchors.py).
        self.anchor_frame = AnchorPolicy(options, n_frames).continuation_anchor()
        self._plan: RunPlan | None = None

    def _bank(self, frame: int) -> AttentionBank:
        return make_bank(self.options, f"frame {frame} of the clip ({self.who})", self.latent_shape,
                         self.model_ref)

    def plan(self, active_sigmas=None) -> RunPlan:
        """The plan of a sampling run over the whole clip. active_sigmas: (high, low) bounds where the method
        acts, in the front end's step unit (ComfyUI: sigma; diffusers: timestep); None = every step."""
        first = self.state.first if self.state is not None else None
        prev = self.state.last if self.state is not None else None
        record_first = record_last = None
        if self.keep_state:
            # A reference already anchors frames 0..N-1; a later keyframe must be recorded.
            if first is None or self.anchor_frame > 0:
                record_first = self._bank(self.anchor_frame)
            record_last = self._bank(self.n_frames - 1)
        self._plan = RunPlan(frames=self.n_frames, options=self.options, first=first, prev=prev,
                             record_first=record_first, record_last=record_last, active_sigmas=active_sigmas,
                             who=self.who, record_first_frame=self.anchor_frame)
        return self._plan

    def result_state(self) -> CrossFrameState:
        """The clip's state after its run: a following run continues from it. Left empty, with a message
        saying how to fill it, unless keep_state was asked for."""
        if not self.keep_state:
            return CrossFrameState(self.options.blocks, self.who, empty_hint=EMPTY_STATE_HINT)
        plan = self._plan
        if plan is None:
            raise CrossFrameError(f"{self.who}: the clip's state was asked for before the clip was sampled.")
        result = CrossFrameState(self.options.blocks, self.who)
        result.first = plan.record_first if plan.record_first is not None else plan.first
        result.last, result.runs = plan.record_last, 1
        return result

"""One sampling run's cross-frame attention: what each self-attention call attends to, and what it records."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from .anchors import BEFORE, REFERENCE, AnchorPolicy
from .assembly import assemble_kv
from .bank import AttentionBank
from .errors import CrossFrameError
from .options import CrossFrameOptions
from .windows import WindowCarry


@dataclass
class RunPlan:
    """Where a run's anchors come from and what it keeps.

    first: the clip's anchor frame (a reference, or the anchor of the clip this run continues); None when the
        clip's frame 0 anchors the rest of the clip.
    prev: the frame just before the clip's frame 0 (the last frame of the clip this run continues); None: use
        `first`. Which frame attends to which is the anchor policy's (anchors.py).
    record_first / record_last: keep clip frame `record_first_frame` (0, or the latest keyframe) / the last
        clip frame at every step, for a later run continuing the clip (a continuation spans sampling runs).
    store: STORE mode: the batch uses ordinary self-attention and its frame 0 is recorded here.
    active_sigmas: (high, low) sigma bounds of the active part of the schedule; None = every step.
    who: the node or call named in error messages.
    keep_window: when one model evaluation is split into windows, carry every frame of the latest window to
        the next one (windows of a user's context schedule may overlap or prepend the frame before them), not
        only its last frame (the pack's own windows: consecutive, in clip order).

    `frames` is the clip this run samples (the sampler's latent batch); a model call may hold all of it or
    one window of it (see FrameRun.kv).
    """

    frames: int
    options: CrossFrameOptions
    first: AttentionBank | None = None
    prev: AttentionBank | None = None
    record_first: AttentionBank | None = None
    record_last: AttentionBank | None = None
    store: AttentionBank | None = None
    active_sigmas: tuple[float, float] | None = None
    who: str = "Cross-frame attention"
    record_first_frame: int = 0
    keep_window: bool = False


def _group_key(flag: int, mapped, by_order: tuple) -> tuple:
    """A conditioning's key: (cond flag, index among its kind) from the sampler's ids when known. Core may
    evaluate a copy of a positive area cond as negative (equal-area uncond, same id): its key keeps the
    flag it is evaluated as, plus the flag of its source, so it never shares a key with that source."""
    if mapped is None:
        return by_order
    return mapped if mapped[0] == flag else (flag, mapped[1], mapped[0])


class _CallCache(threading.local):
    """What one thread remembers about the model call it is in. ComfyUI passes the same `uuids` and `sigmas`
    objects to every layer of one call, so a layer can reuse what the first layer of its call derived.

    Per thread: under MultiGPU CFG split, cond and uncond are evaluated at the same time in two threads
    (one per GPU) through the same patch object; a cache shared between them could hand one thread the
    other's conditioning groups or bank slots."""

    def __init__(self):
        self.ids_obj = None
        self.ids_groups: tuple = ()
        self.sigma_obj = None
        self.sigma = 0.0
        self.slots: dict[int, int] = {}


class FrameRun:
    """Turns one self-attention input into its cross-frame key/value source, per the plan.

    Hot path: the whole-clip fast path (no banks, whole schedule) reads no sigma, so it never syncs with the
    device; otherwise the sigma is read once per model call (cached on the sigma tensor's identity, which
    ComfyUI passes unchanged to every layer of one call) and bank slots once per sigma.

    Safe under concurrent calls (MultiGPU CFG split runs conds in parallel threads): per-call caches are
    per thread, the shared mutable run state (evaluation counts, the window carry) is updated under locks,
    banks lock their own writes, and anchors are read onto the querying tensor's device.

    Windows: a model evaluation split into windows (begin_evaluation / end_evaluation around it) gives kv
    the clip frames of each call; frames held by earlier windows of that evaluation come from `carry`.
    """

    def __init__(self, plan: RunPlan, group_of: dict | None = None):
        """group_of: optional {conditioning id: (cond flag, index)} so that a conditioning keeps its group
        key whatever call it arrives in (ComfyUI: the uuids of the sampler's conds)."""
        if plan.frames < 1:
            raise CrossFrameError(f"{plan.who}: the latent batch is empty; give it at least one frame.")
        self.plan = plan
        self.options = plan.options
        self._uses_banks = any(b is not None for b in (plan.first, plan.prev, plan.record_first,
                                                       plan.record_last, plan.store))
        self._needs_sigma = self._uses_banks or plan.active_sigmas is not None
        self._group_of = dict(group_of or {})
        self._group_cache: dict[tuple, tuple] = {}   # layout -> groups; entries never change once written
        self._call = _CallCache()
        self._occurrences: dict[tuple, int] = {}
        self._occurrence_lock = threading.Lock()
        # Which frames each frame attends to (anchors.py); one answer per window, computed once.
        self.anchors = AnchorPolicy(plan.options, plan.frames, plan.first is not None, plan.prev is not None)
        self.carry = WindowCarry()          # anchors of earlier windows of the current model evaluation
        self._in_evaluation = False
        self._spans: dict[tuple, tuple[int, int]] = {}
        # Whether any patched layer asked for its keys/values: a run that samples but never gets here changed
        # nothing, which the caller reports rather than returning plain frames as if the method had acted.
        self.reached = False

    # -- per model evaluation (set by whoever splits an evaluation into windows) ------------------------
    def begin_evaluation(self) -> None:
        """A model evaluation split into windows starts: nothing carried from the previous one is valid."""
        self.carry.clear()
        self._in_evaluation = True

    def end_evaluation(self) -> None:
        self.carry.clear()
        self._in_evaluation = False

    def _span(self, frames) -> tuple[int, int]:
        """(start, stop) of the clip frames a windowed call holds; they must be consecutive, in order."""
        span = self._spans.get(frames)
        if span is None:
            start = frames[0] if frames else 0
            if tuple(frames) != tuple(range(start, start + len(frames))) or start < 0 \
                    or start + len(frames) > self.plan.frames:
                raise CrossFrameError(
                    f"{self.plan.who}: a context window holds clip frames {list(frames)}, which are not "
                    f"consecutive frames of the {self.plan.frames}-frame clip in order. Looped context schedules "
                    "wrap the clip's end onto its start, which has no previous frame to attend to; use the "
                    "'batched' or 'standard_static' schedule (dim 0).")
            span = (start, start + len(frames))
            self._spans[frames] = span
        return span

    # -- per model call -------------------------------------------------------------------------------
    def _groups(self, cond_or_uncond, batch: int, ids, frames: int) -> tuple:
        call = self._call
        if ids is not None and ids is call.ids_obj:   # every layer of one call gets the same ids object
            groups = call.ids_groups
        else:
            key = tuple(cond_or_uncond)
            groups = self._group_cache.get(key)
            if groups is None:
                if not key:
                    raise CrossFrameError(f"{self.plan.who}: the model call carries no cond/uncond layout.")
                seen: dict[int, int] = {}
                out = []
                for flag in key:
                    out.append((int(flag), seen.get(flag, 0)))  # by order within the call
                    seen[flag] = seen.get(flag, 0) + 1
                groups = tuple(out)
                self._group_cache[key] = groups
            if ids is not None and self._group_of:
                groups = tuple(_group_key(int(flag), self._group_of.get(i), g)
                               for flag, i, g in zip(key, ids, groups))
                call.ids_obj, call.ids_groups = ids, groups
        if batch != len(groups) * frames:
            raise CrossFrameError(
                f"{self.plan.who}: a model call holds {batch} images for {len(groups)} conditioning "
                f"group(s), but this run samples {frames} frame(s) at once. The patched model must be "
                "sampled on the latent batch it was planned for; don't share it with a sampler that changes "
                "the batch.")
        return groups

    def _sigma_value(self, sigma) -> float:
        call = self._call
        if sigma is call.sigma_obj:
            return call.sigma
        value = float(sigma.reshape(-1)[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
        call.sigma_obj, call.sigma, call.slots = sigma, value, {}
        return value

    def _slot(self, bank: AttentionBank, sigma: float) -> int:
        slots = self._call.slots
        slot = slots.get(id(bank))
        if slot is None:
            slot = bank.slot(sigma, self.plan.who)
            slots[id(bank)] = slot
        return slot

    def _fetch(self, bank: AttentionBank, layer, groups, occurrences, sigma: float,
               x: torch.Tensor) -> torch.Tensor:
        rows = bank.fetch(layer, groups, occurrences, self._slot(bank, sigma), x, self.plan.who)
        if rows.shape[1] == x.shape[1] and rows.shape[2:] != x.shape[2:]:
            raise CrossFrameError(
                f"{self.plan.who}: {bank.label} was recorded with other self-attention inputs in layer {layer} "
                f"({rows.shape[-1]} channels, the frames have {x.shape[-1]}): an attention patch such as a "
                "hypernetwork sits at another place in the MODEL chain of the reference than in the frames' "
                "(a hypernetwork before the cross-frame node keeps keys and values apart). Give the reference's "
                "model and the frames' model the same nodes in the same order.")
        if rows.shape[1:] != x.shape[1:]:
            raise CrossFrameError(
                f"{self.plan.who}: {bank.label} was recorded at another resolution ({rows.shape[1]} tokens "
                f"in layer {layer}, the frames have {x.shape[1]}). Sample the reference and the frames at "
                "the same width and height.")
        return rows

    def _occurrence(self, layer, groups, sigma: float, start: int) -> list[int]:
        """How many times each group was already evaluated at this sigma in this run (heun, PAG, SAG).
        Counted per window (by its first frame): every window of one evaluation is that evaluation."""
        out = []
        with self._occurrence_lock:
            for group in groups:
                key = (layer, group, sigma, start)
                n = self._occurrences.get(key, 0)
                self._occurrences[key] = n + 1
                out.append(n)
        return out

    def _record(self, bank: AttentionBank | None, layer, groups, occurrences, sigma: float, frames) -> None:
        if bank is not None:
            for group, occurrence, tokens in zip(groups, occurrences, frames):
                bank.record(layer, group, sigma, tokens, occurrence)

    def _carried(self, layer, groups, frame: int, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        rows = []
        for group in groups:
            row = self.carry.get(layer, group, frame) if self._in_evaluation else None
            if row is None:
                raise CrossFrameError(
                    f"{self.plan.who}: a context window of clip frames {start}..{stop - 1} needs frame {frame}'s "
                    "attention from the same model evaluation, but no earlier window of this evaluation held "
                    "it. Cross-frame attention needs windows evaluated in clip order (each window's previous "
                    "frame and the first frame before it): use the 'batched' or 'standard_static' context "
                    "schedule, or Batch Video Sampler's frames_per_batch.")
            rows.append(row.to(x.device))
        return rows[0].unsqueeze(0) if len(rows) == 1 else torch.stack(rows)

    def _source(self, source, layer, groups, occurrences, s: float, x, xs, start: int, stop: int):
        """[groups, T, C] of an anchor source (see anchors.py): a bank of the plan, a frame of this window,
        or a frame an earlier window of this evaluation held (the carry)."""
        if source == REFERENCE:
            return self._fetch(self.plan.first, layer, groups, occurrences, s, x)
        if source == BEFORE:
            return self._fetch(self.plan.prev, layer, groups, occurrences, s, x)
        if start <= source < stop:
            return xs[:, source - start]
        return self._carried(layer, groups, source, x, start, stop)

    def kv(self, layer, x: torch.Tensor, cond_or_uncond, sigma, ids=None, frames=None,
           out=None) -> torch.Tensor | None:
        """Key/value source for self-attention input `x` ([groups * F, T, C]) of `layer`, or None to
        leave the layer's ordinary self-attention alone. `ids`: the call's conditioning ids (see group_of).
        `frames`: the clip frames (consecutive) this call holds when a model evaluation is split into
        windows; None = the whole clip. Window frames attend to frames held by earlier windows of the same
        evaluation through the carry (see windows.py). `out`: where to write the anchors (see assemble_kv)."""
        self.reached = True
        plan, opts = self.plan, self.options
        start, stop = (0, plan.frames) if frames is None else self._span(frames)
        groups = self._groups(cond_or_uncond, x.shape[0], ids, stop - start)
        s = self._sigma_value(sigma) if self._needs_sigma else 0.0
        g, f = len(groups), stop - start
        xs = x.reshape(g, f, *x.shape[1:])
        occurrences = self._occurrence(layer, groups, s, start) if self._uses_banks else None
        # Recorded at every step, active or not (a kept state must serve runs with other percents too),
        # and before anything is read: a run never reads the banks it writes.
        if start == 0:
            self._record(plan.store, layer, groups, occurrences, s, xs[:, 0])
        if start <= plan.record_first_frame < stop:
            self._record(plan.record_first, layer, groups, occurrences, s, xs[:, plan.record_first_frame - start])
        if stop == plan.frames:
            self._record(plan.record_last, layer, groups, occurrences, s, xs[:, f - 1])
        if plan.store is not None:
            return None
        if plan.active_sigmas is not None and not plan.active_sigmas[1] <= s <= plan.active_sigmas[0]:
            return None
        anchors = self.anchors.window(start, stop)
        resolved: dict = {}   # each source read once per call (frame 0's previous is often its first anchor)

        def read(source):
            if source not in resolved:
                resolved[source] = self._source(source, layer, groups, occurrences, s, x, xs, start, stop)
            return resolved[source]
        first = [(lo, hi, read(source)) for lo, hi, source in anchors.first]
        if len(first) == 1:
            first = first[0][2]          # one anchor for the whole call: broadcast, no per-span copies
        prev0 = read(anchors.prev0) if anchors.prev0 is not None else None
        kv = assemble_kv(x, g, first, prev0, opts.anchors, opts.include_self, out)
        if frames is not None and stop < plan.frames:
            for gi, group in enumerate(groups):
                self.carry.keep(layer, group, xs[gi], start, anchors, plan.keep_window)
        return kv

"""One sampling run's cross-frame attention: what each self-attention call attends to, and what it records."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .assembly import assemble_kv
from .bank import AttentionBank
from .errors import CrossFrameError
from .options import CrossFrameOptions


@dataclass
class RunPlan:
    """Where a run's anchors come from and what it keeps.

    first: the clip's anchor frame (a reference, or frame 0 of an earlier chunk); None when batch frame 0 is
        the clip's first frame, which then anchors the rest of the batch.
    prev: the frame just before batch frame 0 (last frame of the previous chunk); None: use `first`.
    record_first / record_last: keep batch frame 0 / the last batch frame for later chunks or later nodes.
    store: STORE mode: the batch uses ordinary self-attention and its frame 0 is recorded here.
    active_sigmas: (high, low) sigma bounds of the active part of the schedule; None = every step.
    who: the node or call named in error messages.
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


class FrameRun:
    """Turns one self-attention input into its cross-frame key/value source, per the plan.

    Hot path: the whole-clip fast path (no banks, whole schedule) reads no sigma, so it never syncs with the
    device; otherwise the sigma is read once per model call (cached on the sigma tensor's identity, which
    ComfyUI passes unchanged to every layer of one call) and bank slots once per sigma.
    """

    def __init__(self, plan: RunPlan):
        if plan.frames < 1:
            raise CrossFrameError(f"{plan.who}: the latent batch is empty; give it at least one frame.")
        self.plan = plan
        self.options = plan.options
        self._needs_sigma = any(b is not None for b in (plan.first, plan.prev, plan.record_first,
                                                         plan.record_last, plan.store)) \
            or plan.active_sigmas is not None
        self._group_cache: dict[tuple, tuple] = {}
        self._sigma_obj = None
        self._sigma = 0.0
        self._slots: dict[int, int] = {}
        self.calls = 0  # self-attention calls served, for tests and diagnostics

    # -- per model call -------------------------------------------------------------------------------
    def _groups(self, cond_or_uncond, batch: int) -> tuple:
        key = tuple(cond_or_uncond)
        groups = self._group_cache.get(key)
        if groups is None:
            if not key:
                raise CrossFrameError(f"{self.plan.who}: the model call carries no cond/uncond layout.")
            seen: dict[int, int] = {}
            out = []
            for flag in key:
                out.append((int(flag), seen.get(flag, 0)))  # ordinal keeps extra (area) conds apart
                seen[flag] = seen.get(flag, 0) + 1
            groups = tuple(out)
            self._group_cache[key] = groups
        if batch != len(groups) * self.plan.frames:
            raise CrossFrameError(
                f"{self.plan.who}: a model call holds {batch} images for {len(groups)} conditioning "
                f"group(s), but this run samples {self.plan.frames} frame(s). The patched model must be "
                "sampled on the latent batch it was planned for; don't share it with a sampler that changes "
                "the batch.")
        return groups

    def _sigma_value(self, sigma) -> float:
        if sigma is self._sigma_obj:
            return self._sigma
        value = float(sigma.reshape(-1)[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
        self._sigma_obj, self._sigma, self._slots = sigma, value, {}
        return value

    def _slot(self, bank: AttentionBank, sigma: float) -> int:
        slot = self._slots.get(id(bank))
        if slot is None:
            slot = bank.slot(sigma)
            self._slots[id(bank)] = slot
        return slot

    def _fetch(self, bank: AttentionBank, layer, groups, sigma: float, x: torch.Tensor) -> torch.Tensor:
        rows = bank.fetch(layer, groups, self._slot(bank, sigma), x)
        if rows.shape[1:] != x.shape[1:]:
            raise CrossFrameError(
                f"{self.plan.who}: {bank.label} was recorded at another resolution ({rows.shape[1]} tokens "
                f"in layer {layer}, the frames have {x.shape[1]}). Sample the reference and the frames at "
                "the same width and height.")
        return rows

    def kv(self, layer, x: torch.Tensor, cond_or_uncond, sigma) -> torch.Tensor | None:
        """Key/value source for self-attention input `x` ([groups * frames, T, C]) of `layer`, or None to
        leave the layer's ordinary self-attention alone."""
        plan = self.plan
        groups = self._groups(cond_or_uncond, x.shape[0])
        s = self._sigma_value(sigma) if self._needs_sigma else 0.0
        self.calls += 1
        g, f = len(groups), plan.frames
        xs = x.view(g, f, *x.shape[1:])
        if plan.store is not None:
            for i, group in enumerate(groups):
                plan.store.record(layer, group, s, xs[i, 0])
            return None
        if plan.active_sigmas is not None and not plan.active_sigmas[1] <= s <= plan.active_sigmas[0]:
            return None
        first = xs[:, 0] if plan.first is None else self._fetch(plan.first, layer, groups, s, x)
        if plan.prev is not None and self.options.uses_previous:
            prev0 = self._fetch(plan.prev, layer, groups, s, x)
        else:
            prev0 = first
        context = assemble_kv(x, g, first, prev0, self.options.anchors, self.options.include_self)
        if plan.record_first is not None:
            for i, group in enumerate(groups):
                plan.record_first.record(layer, group, s, xs[i, 0])
        if plan.record_last is not None:
            for i, group in enumerate(groups):
                plan.record_last.record(layer, group, s, xs[i, f - 1])
        return context

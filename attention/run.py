"""One sampling run's cross-frame attention: what each self-attention call attends to, and what it records."""
from __future__ import annotations

import threading
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
    per thread, the only shared mutable run state (evaluation counts) is updated under a lock, banks lock
    their own writes, and anchors are read onto the querying tensor's device.
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

    # -- per model call -------------------------------------------------------------------------------
    def _groups(self, cond_or_uncond, batch: int, ids) -> tuple:
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
                groups = tuple(self._group_of.get(i, g) for i, g in zip(ids, groups))
                call.ids_obj, call.ids_groups = ids, groups
        if batch != len(groups) * self.plan.frames:
            raise CrossFrameError(
                f"{self.plan.who}: a model call holds {batch} images for {len(groups)} conditioning "
                f"group(s), but this run samples {self.plan.frames} frame(s). The patched model must be "
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
        if rows.shape[1:] != x.shape[1:]:
            raise CrossFrameError(
                f"{self.plan.who}: {bank.label} was recorded at another resolution ({rows.shape[1]} tokens "
                f"in layer {layer}, the frames have {x.shape[1]}). Sample the reference and the frames at "
                "the same width and height.")
        return rows

    def _occurrence(self, layer, groups, sigma: float) -> list[int]:
        """How many times each group was already evaluated at this sigma in this run (heun, PAG, SAG)."""
        out = []
        with self._occurrence_lock:
            for group in groups:
                key = (layer, group, sigma)
                n = self._occurrences.get(key, 0)
                self._occurrences[key] = n + 1
                out.append(n)
        return out

    def _record(self, bank: AttentionBank | None, layer, groups, occurrences, sigma: float, frames) -> None:
        if bank is not None:
            for group, occurrence, tokens in zip(groups, occurrences, frames):
                bank.record(layer, group, sigma, tokens, occurrence)

    def kv(self, layer, x: torch.Tensor, cond_or_uncond, sigma, ids=None) -> torch.Tensor | None:
        """Key/value source for self-attention input `x` ([groups * frames, T, C]) of `layer`, or None to
        leave the layer's ordinary self-attention alone. `ids`: the call's conditioning ids (see group_of)."""
        plan = self.plan
        groups = self._groups(cond_or_uncond, x.shape[0], ids)
        s = self._sigma_value(sigma) if self._needs_sigma else 0.0
        g, f = len(groups), plan.frames
        xs = x.reshape(g, f, *x.shape[1:])
        occurrences = self._occurrence(layer, groups, s) if self._uses_banks else None
        # Recorded at every step, active or not (a kept state must serve runs with other percents too),
        # and before anything is read: a run never reads the banks it writes.
        self._record(plan.store, layer, groups, occurrences, s, xs[:, 0])
        self._record(plan.record_first, layer, groups, occurrences, s, xs[:, 0])
        self._record(plan.record_last, layer, groups, occurrences, s, xs[:, f - 1])
        if plan.store is not None:
            return None
        if plan.active_sigmas is not None and not plan.active_sigmas[1] <= s <= plan.active_sigmas[0]:
            return None
        first = xs[:, 0] if plan.first is None else self._fetch(plan.first, layer, groups, occurrences, s, x)
        if plan.prev is not None and self.options.uses_previous:
            prev0 = self._fetch(plan.prev, layer, groups, occurrences, s, x)
        else:
            prev0 = first
        return assemble_kv(x, g, first, prev0, self.options.anchors, self.options.include_self)

"""Stored self-attention inputs of one frame, per (layer, conditioning group, denoising step, evaluation)."""
from __future__ import annotations

import threading

import torch

from .errors import CrossFrameError
from .steps import SigmaIndex


class AttentionBank:
    """One frame's attn1 inputs (pre-projection hidden states, [tokens, channels]) at every recorded step.

    Used for the reference frame (STORE), and for the anchor and the last frame of a clip whose state is kept
    (the `first` and `prev` of a run continuing it). Keys: layer id (any hashable), group key
    ((cond flag, index of the conditioning), so cond and uncond and several conds never mix), the step's
    sigma slot, and the evaluation's occurrence at that sigma (heun evaluates a sigma twice, PAG/SAG add an
    extra pass: the n-th evaluation of a run reads the n-th of the recording run, or its last one).

    Writes take a lock: under MultiGPU CFG split, cond and uncond record into the same bank from two threads
    at once, and two first records of one sigma must get one step slot, not two.
    """

    def __init__(self, label: str, device: torch.device | None = None, dtype: torch.dtype | None = None):
        self.label = label                # says what this bank is in error messages
        self.device = device              # None: keep the recorded tensor's device
        self.dtype = dtype                # None: keep the recorded tensor's dtype
        self.steps = SigmaIndex()
        self._entries: dict[tuple, torch.Tensor] = {}
        self._last_occurrence: dict[tuple, int] = {}
        self.groups: set = set()
        self.latent_shape: tuple | None = None   # (channels, [time,] height, width) of the latent sampled
        self.pixels_per_latent = 8               # image pixels per latent pixel, for messages (Flux.2: 16)
        self.model_ref = None                    # weakref to the model that produced it, when known
        self.produced = None                     # LatentFingerprint of the LATENT its run produced (Store)
        self._lock = threading.Lock()
        self._ready: dict[tuple, "torch.cuda.Event"] = {}   # pinned entries: copy-finished events

    def __len__(self):
        return len(self._entries)

    @property
    def filled(self) -> bool:
        return bool(self._entries)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._entries.values())

    def record(self, layer, group, sigma: float, tokens: torch.Tensor, occurrence: int = 0) -> None:
        """Keep a copy of `tokens` ([T, C]); a view of the live batch must not keep the batch alive."""
        dev = tokens.device if self.device is None else self.device
        dt = tokens.dtype if self.dtype is None else self.dtype
        tokens = tokens.detach()
        ready = None
        if dev.type == "cpu" and tokens.device.type == "cuda":
            # Into pinned memory without waiting for the GPU. Nothing reads it on the host; `fetch` makes
            # the reading stream wait for this event, which also orders a read from another GPU (MultiGPU
            # CFG split may evaluate a conditioning on another device in the next run).
            kept = torch.empty(tokens.shape, dtype=dt, pin_memory=True)
            kept.copy_(tokens.to(dt), non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(tokens.device))
        else:
            kept = tokens.to(device=dev, dtype=dt, copy=True)
        with self._lock:
            slot = self.steps.slot_for_record(sigma)
            self._entries[(layer, group, slot, occurrence)] = kept
            if ready is not None:
                self._ready[(layer, group, slot, occurrence)] = ready
            step = (layer, group, slot)
            self._last_occurrence[step] = max(occurrence, self._last_occurrence.get(step, 0))
            self.groups.add(group)

    def slot(self, sigma: float, who: str) -> int:
        return self.steps.slot_for_lookup(sigma, f"{who}: {self.label}")

    def fetch(self, layer, groups, occurrences, slot: int, like: torch.Tensor, who: str) -> torch.Tensor:
        """[len(groups), T, C] on `like`'s device and dtype, for the groups of one model call."""
        rows = []
        for group, occurrence in zip(groups, occurrences):
            last = self._last_occurrence.get((layer, group, slot))
            if last is None:
                raise CrossFrameError(self._missing_message(layer, group, who))
            key = (layer, group, slot, min(occurrence, last))
            entry = self._entries[key]
            ready = self._ready.get(key)
            if ready is not None and like.is_cuda:
                torch.cuda.current_stream(like.device).wait_event(ready)
            # each row to the device first: a pinned row uploads asynchronously, a host-side stack would not
            rows.append(entry.to(device=like.device, dtype=like.dtype, non_blocking=True))
        return rows[0].unsqueeze(0) if len(rows) == 1 else torch.stack(rows)

    def _missing_message(self, layer, group, who: str) -> str:
        if group not in self.groups:
            kind = "positive (cond)" if group[0] == 0 else "negative (uncond)"
            return (f"{who}: {self.label} has no {kind} attention recorded for conditioning #{group[1] + 1} "
                    f"of that kind (it recorded {len(self.groups)} conditioning group(s)). Sample the "
                    "reference and the frames with the same cfg setup (cfg = 1 skips the negative prompt) "
                    "and the same number of conditionings (Conditioning Combine / Set Area add some).")
        return (f"{who}: {self.label} has nothing recorded for attention layer {layer}: it was stored for "
                "other blocks. Use the same blocks for storing and for the frames.")

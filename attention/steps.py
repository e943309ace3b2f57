"""Which stored denoising step a model evaluation belongs to, keyed by its sigma (noise level).

Why sigma and not a call counter: samplers may evaluate the model several times per step (heun, dpm_2),
cond and uncond may arrive in one call or two, and a reference may be sampled on another schedule than the
frames. The sigma of an evaluation identifies its step whatever the call pattern.

Policy (documented in docs/how-it-works.md):
- a sigma within MATCH_RTOL of a stored one is that step;
- otherwise the nearest stored sigma is used, with one warning per bank, as long as the sigma lies inside
  the stored range widened by RANGE_SLACK (heun/dpm_2 intermediate evaluations, another scheduler or step
  count, a different denoise that still overlaps);
- a sigma outside that range has no usable match: an error, because the reference never saw that noise
  level (e.g. reference sampled with denoise 0.5, frames with denoise 1.0).
A sigma evaluated several times in one run (heun evaluates sigma[i+1] at the end of step i and again at the
start of step i+1; PAG and SAG add a pass) keeps one record per evaluation: the n-th evaluation of a run
reads the n-th of the recording run, or its last one if it had fewer (see AttentionBank).
"""
from __future__ import annotations

import bisect
import logging

from .errors import CrossFrameError

MATCH_RTOL = 1e-4
MATCH_ATOL = 1e-6
RANGE_SLACK = 0.05

log = logging.getLogger("CrossFrameAttention")


class SigmaIndex:
    """Distinct sigmas seen while recording, each with a slot number; answers lookups under the policy above."""

    def __init__(self):
        self._slots: dict[float, int] = {}
        self._sorted: list[float] = []
        self.fallbacks = 0  # lookups served by the nearest-sigma fallback, for tests and diagnostics

    def __len__(self):
        return len(self._sorted)

    def _closest(self, sigma: float) -> float | None:
        if not self._sorted:
            return None
        i = bisect.bisect_left(self._sorted, sigma)
        near = [self._sorted[j] for j in (i - 1, i) if 0 <= j < len(self._sorted)]
        return min(near, key=lambda s: abs(s - sigma))

    @staticmethod
    def _same(a: float, b: float) -> bool:
        return abs(a - b) <= MATCH_ATOL + MATCH_RTOL * abs(b)

    def slot_for_record(self, sigma: float) -> int:
        near = self._closest(sigma)
        if near is not None and self._same(sigma, near):
            return self._slots[near]
        slot = len(self._slots)
        self._slots[sigma] = slot
        bisect.insort(self._sorted, sigma)
        return slot

    def slot_for_lookup(self, sigma: float, what: str) -> int:
        near = self._closest(sigma)
        if near is None:
            raise CrossFrameError(f"{what} holds no denoising steps: it was never filled by a sampling run.")
        if self._same(sigma, near):
            return self._slots[near]
        lo, hi = self._sorted[0], self._sorted[-1]
        if not lo / (1 + RANGE_SLACK) - MATCH_ATOL <= sigma <= hi * (1 + RANGE_SLACK) + MATCH_ATOL:
            raise CrossFrameError(
                f"{what} has no step usable at noise level sigma={sigma:.4g}: it was recorded for sigmas "
                f"{lo:.4g}..{hi:.4g}. Sample the reference with the same steps, scheduler and denoise as "
                "the frames (or a higher denoise than the frames).")
        if self.fallbacks == 0:
            log.warning("%s: sigma %.4g is not one of its recorded steps; using the nearest recorded sigma "
                        "%.4g (the reference was sampled on another schedule or the sampler evaluates "
                        "between steps). This warning is shown once per reference.", what, sigma, near)
        self.fallbacks += 1
        return self._slots[near]

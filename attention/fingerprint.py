"""Recognise the latent a recorded sampling run produced.

A recording is filled as a side effect of another node's sampler, and ComfyUI's caches can serve that
sampler's LATENT from an earlier run while the recording already holds a later one (seed 1, then 2, then 1
again under an LRU or RAM-pressure cache). Reading nodes take the reference LATENT by a link; comparing it with
the fingerprint of what the recording's run produced tells whether the two belong together.
"""
from __future__ import annotations

import torch

PROBES = 4096          # values compared; evenly spread over the latent
# ComfyUI may hand the LATENT on in another dtype than the sampler computed (0.30+ casts to its intermediate
# dtype: float16/bfloat16 round at about 4e-3 relative); latents of different runs differ by O(1).
RTOL = 1e-2


def _probe(samples: torch.Tensor) -> torch.Tensor:
    flat = samples.detach().reshape(-1)
    count = min(PROBES, flat.numel())
    index = torch.linspace(0, flat.numel() - 1, count, device=flat.device).round().long()
    return flat[index].float().cpu()


class LatentFingerprint:
    """Shape and a spread sample of values of one latent batch (a host copy: a few KB)."""

    def __init__(self, samples: torch.Tensor):
        self.shape = tuple(samples.shape)
        self.values = _probe(samples)

    def matches(self, samples: torch.Tensor) -> bool:
        if tuple(samples.shape) != self.shape:
            return False
        other = _probe(samples)
        scale = float(self.values.abs().max()) if self.values.numel() else 0.0
        return bool(torch.allclose(other, self.values, rtol=RTOL, atol=RTOL * max(scale, 1e-6)))

"""Random weights for the tiny in-process models (ComfyUI leaves weights uninitialised: NaNs).

A module of its own, not conftest: several test folders have a conftest.py, so `from conftest import ...`
would find whichever folder pytest put first on sys.path."""
import math

import torch


def init_weights(module: torch.nn.Module, generator: torch.Generator) -> None:
    """ComfyUI leaves weights uninitialised (NaNs). std 1/sqrt(fan_in) keeps attention far from uniform,
    so the method's effect stands well above round-off."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(fan_in))
            elif name.endswith("weight"):  # norms
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)

"""Tests of the diffusers front end (attention/diffusers_frontend/) on tiny randomly initialised models.

The core is imported as the installed package `cross_frame_attention`, never through the repo root (ComfyUI's
top-level `nodes` module would clash with our `nodes/`). Each test module skips itself when diffusers (the
optional `diffusers` extra) is not installed.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_cpu_thread():
    """The models are tiny: one thread is fastest and keeps timings steady on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

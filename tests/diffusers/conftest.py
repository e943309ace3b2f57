"""Tests of the diffusers front end (the package `cross_frame_diffusers`, folder diffusers_pipelines/) on tiny
randomly initialised models.

The front end and the core it drives (`cross_frame_attention`, folder attention/) are loaded here from THIS
checkout by file path: the editable install of the pack may point at another worktree, and the repo root must
never go on sys.path (ComfyUI's top-level `nodes` module would clash with our `nodes/`). The core goes first:
the front end imports it by its package name. Each test module skips itself when diffusers (the optional
`diffusers` extra) is not installed.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"cross_frame_attention": REPO / "attention", "cross_frame_diffusers": REPO / "diffusers_pipelines"}


def _load_from_this_checkout(name: str, folder: Path):
    loaded = sys.modules.get(name)
    if loaded is not None:
        where = Path(loaded.__file__).resolve().parent
        if where != folder:
            raise RuntimeError(f"{name} was already imported from {where}, not from this checkout ({folder}); "
                               "run tests/diffusers on its own or install the pack from this checkout.")
        return
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


for _name, _folder in PACKAGES.items():
    _load_from_this_checkout(_name, _folder)


@pytest.fixture(scope="module", autouse=True)
def _one_cpu_thread():
    """The models are tiny: one thread is fastest and keeps timings steady on a shared 2-core box. Tests marked
    thread_sensitive run at the session's count instead (tests/conftest.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

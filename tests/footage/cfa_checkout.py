"""Import a package of THIS checkout by file path, for tests, scripts and benchmarks (they all put this folder
on sys.path). Why by path: the repo root must never go on sys.path (ComfyUI has a top-level `nodes` module
that would clash with ours), and an installed copy of the pack may point at another worktree."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_package(name: str, folder: str):
    """The package in REPO/`folder`, imported once under `name` (later calls return the same module)."""
    if name not in sys.modules:
        path = REPO / folder
        spec = importlib.util.spec_from_file_location(name, path / "__init__.py",
                                                      submodule_search_locations=[str(path)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_consistency():
    """The Measure Temporal Consistency package (`consistency/`) as `cfa_consistency`."""
    return load_package("cfa_consistency", "consistency")

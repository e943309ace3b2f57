"""Imported first by every test module here: skips that module, saying why, unless the optional diffusers
extra (diffusers and transformers) is installed. (This folder is on sys.path through pytest's rootdir
insertion, as tests/unit's helpers are; the repo root never is.)"""
import pytest

WHY = "the diffusers pipeline is an optional extra: pip install diffusers transformers"
pytest.importorskip("diffusers", reason=f"diffusers is not installed ({WHY})")
pytest.importorskip("transformers", reason=f"transformers is not installed ({WHY})")

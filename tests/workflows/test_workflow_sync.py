"""Offline checks of example_workflows/ (no ComfyUI needed).

- every UI workflow has an API twin in example_workflows/api/ and vice versa, with the same nodes,
  links and widget values (tests/server/test_workflow_structure.py repeats this exactly, against the
  live schemas of a running server);
- UI files are v0.4 graphs whose links are consistent;
- each UI workflow has a .jpg thumbnail beside it;
- nodes carry the registry id and version from pyproject.toml.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cfa_workflow_tools as wt  # noqa: E402

UI_NAMES = wt.example_names()


def _project():
    """[project] name and version from pyproject.toml (tomllib on 3.11+, a plain scan before)."""
    path = wt.REPO_ROOT / "pyproject.toml"
    try:
        import tomllib
    except ImportError:
        text = path.read_text()
        section = text.split("[project]", 1)[1].split("\n[", 1)[0]
        return {k: re.search(rf'^{k}\s*=\s*"([^"]+)"', section, re.M).group(1) for k in ("name", "version")}
    with open(path, "rb") as f:
        return tomllib.load(f)["project"]


def test_examples_exist_and_pair_up():
    assert len(UI_NAMES) >= 4, f"expected the four example workflows, found {UI_NAMES}"
    assert UI_NAMES == wt.api_names(), (f"UI workflows {UI_NAMES} and API twins {wt.api_names()} "
                                        "must pair up one to one")


@pytest.mark.parametrize("name", UI_NAMES)
def test_twins_in_sync(name):
    ui = wt.load_json(wt.EXAMPLES_DIR / f"{name}.json")
    api = wt.load_json(wt.API_DIR / f"{name}.json")
    problems = wt.twin_problems(ui, api, name)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", UI_NAMES)
def test_ui_graph_consistent(name):
    ui = wt.load_json(wt.EXAMPLES_DIR / f"{name}.json")
    # with an empty schema only the graph-level checks apply; unknown types are the live test's job
    problems = [p for p in wt.structure_problems(ui, {}, name) if "unknown to ComfyUI" not in p]
    assert not problems, "\n".join(problems)
    assert any(n["type"] in wt.UI_ONLY_TYPES for n in ui["nodes"]), f"{name}: no Note telling users what to change"


@pytest.mark.parametrize("name", UI_NAMES)
def test_thumbnail(name):
    jpg = wt.EXAMPLES_DIR / f"{name}.jpg"
    assert jpg.is_file(), f"{name}.jpg (template thumbnail) is missing"
    data = jpg.read_bytes()
    assert data[:3] == b"\xff\xd8\xff", f"{jpg.name} is not a JPEG"
    assert 2_000 < len(data) < 300_000, f"{jpg.name} is {len(data)} bytes"
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(jpg) as im:
        im.verify()
        assert min(im.size) >= 128


@pytest.mark.parametrize("name", UI_NAMES)
def test_node_properties_carry_registry_id(name):
    project = _project()
    ui = wt.load_json(wt.EXAMPLES_DIR / f"{name}.json")
    ours = [n for n in ui["nodes"] if n["type"].startswith("CFA_")]
    assert ours, f"{name} uses none of this pack's nodes"
    for n in ours:
        props = n.get("properties", {})
        assert props.get("cnr_id") == project["name"], (name, n["id"], props)
        assert props.get("ver") == project["version"], (name, n["id"], props)
        assert props.get("Node name for S&R") == n["type"], (name, n["id"], props)
    for n in ui["nodes"]:
        if n["type"] not in wt.UI_ONLY_TYPES and not n["type"].startswith("CFA_"):
            assert n.get("properties", {}).get("cnr_id") == "comfy-core", (name, n["id"], n.get("properties"))


def test_api_folder_holds_only_api_format():
    for name in wt.api_names():
        api = wt.load_json(wt.API_DIR / f"{name}.json")
        assert isinstance(api, dict) and "nodes" not in api, f"api/{name}.json is not API format"
        for nid, entry in api.items():
            assert nid.isdigit() and "class_type" in entry and isinstance(entry.get("inputs"), dict), (name, nid)


def test_added_widgets_postdate_the_baseline():
    """The examples keep the baseline layout; ADDED_WIDGETS only names inputs of later versions."""
    base = wt.version_tuple(wt.BASELINE_COMFYUI)
    assert base is not None
    assert wt.added_widgets(wt.BASELINE_COMFYUI) == {}
    for since, node_type, name, default in wt.ADDED_WIDGETS:
        assert wt.version_tuple(since) > base, (since, node_type, name)
        assert (node_type, name) in wt.added_widgets(since), (since, node_type, name, default)


def test_added_required_are_added_widgets():
    """ADDED_REQUIRED only marks entries of ADDED_WIDGETS (a required input missing from the table would
    fail the live layout checks, not silently pass here)."""
    named = {(node_type, name) for _, node_type, name, _ in wt.ADDED_WIDGETS}
    assert wt.ADDED_REQUIRED <= named, sorted(wt.ADDED_REQUIRED - named)

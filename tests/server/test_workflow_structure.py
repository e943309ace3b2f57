"""The example workflows against a live server: valid v0.4 graphs whose widget layout matches the live
/object_info, whose API twin is exactly what the UI graph converts to, and which ComfyUI lists and
serves as templates of this pack.

The examples are written in the baseline layout (ComfyUI 0.3.64). On a newer server the layout must be
exactly the live schemas minus the optional widgets named in cfa_workflow_tools.ADDED_WIDGETS for that
version, and that table must agree with the live schemas (test_added_widgets_match_live_schemas)."""
from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

import cfa_serverkit as kit
import cfa_test_graphs as graphs
import cfa_workflow_tools as wt

UI_NAMES = wt.example_names()


@pytest.mark.parametrize("name", UI_NAMES)
def test_ui_workflow_matches_live_schemas(name, object_info, pack_nodes, comfy_version):
    ui = wt.load_json(wt.EXAMPLES_DIR / f"{name}.json")
    problems = wt.structure_problems(ui, object_info, name, comfy_version)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", UI_NAMES)
def test_api_twin_is_the_ui_graph(name, object_info, pack_nodes, comfy_version):
    ui = wt.load_json(wt.EXAMPLES_DIR / f"{name}.json")
    converted, problems = wt.ui_to_api(ui, object_info, comfy_version)
    assert not problems, "\n".join(problems)
    twin = wt.load_json(wt.API_DIR / f"{name}.json")
    twin = {k: {"inputs": v["inputs"], "class_type": v["class_type"]} for k, v in twin.items()}
    assert converted == twin, (f"{name}: api/{name}.json differs from the UI graph converted with the live "
                               f"schemas (re-run tests/workflows/build_examples.py):\n"
                               f"converted: {json.dumps(converted, sort_keys=True)}\n"
                               f"twin:      {json.dumps(twin, sort_keys=True)}")


@pytest.mark.parametrize("name", sorted(graphs.NOT_RUNNABLE))
def test_api_twin_has_every_input_the_server_requires(name, comfy_server):
    """A program posting an API twin as it is gets no refusal for a missing input on any supported version
    (ComfyUI 0.30.0 made three new WanContextWindowsManual inputs required: the twins carry them, 0.3.64
    ignores them). Posted here: the twins no fixture runs, so the server refuses them, but only for the model
    and video files it does not have."""
    twin = wt.load_json(wt.API_DIR / f"{name}.json")
    status, body = kit.http_json(comfy_server.url + "/prompt", {"prompt": twin})
    assert status == 400, f"{name}: the server queued a prompt whose model files it lacks: {body}"
    refusals = [(nid, error.get("type"), error.get("extra_info", {}).get("input_name"))
                for nid, node in body.get("node_errors", {}).items() for error in node.get("errors", [])]
    assert refusals, f"{name}: refused without a node error: {body}"
    missing_file = {"value_not_in_list", "custom_validation_failed"}   # a model list, a LoadVideo's file
    wrong = [r for r in refusals if r[1] not in missing_file or not (str(r[2]).endswith("_name") or r[2] == "file")]
    assert not wrong, f"{name}: refusals other than missing files: {wrong}\n{json.dumps(body)[:3000]}"


def test_added_widgets_match_live_schemas(object_info, comfy_version):
    """ADDED_WIDGETS is exact for this server: its entries for this version exist with their defaults,
    later ones do not (the per-node count checks above catch any widget missing from the table)."""
    used = {n["type"] for name in UI_NAMES for n in wt.load_json(wt.EXAMPLES_DIR / f"{name}.json")["nodes"]}
    problems = wt.added_widget_problems(object_info, comfy_version, used)
    assert not problems, "\n".join(problems)


def test_workflow_templates_lists_examples(comfy_server):
    listing = comfy_server.get("/workflow_templates")
    assert kit.PACK_DIR_NAME in listing, f"/workflow_templates does not list the pack: {listing}"
    assert sorted(listing[kit.PACK_DIR_NAME]) == UI_NAMES, listing[kit.PACK_DIR_NAME]


@pytest.mark.parametrize("name", UI_NAMES)
def test_templates_are_served(name, comfy_server):
    # the frontend's template browser fetches the graph and its thumbnail from these routes
    base = f"/api/workflow_templates/{urllib.parse.quote(kit.PACK_DIR_NAME)}/{urllib.parse.quote(name)}"
    status, body = kit.http_json(comfy_server.url + base + ".json")
    assert status == 200, f"{base}.json -> {status}"
    assert body == wt.load_json(wt.EXAMPLES_DIR / f"{name}.json")
    with urllib.request.urlopen(comfy_server.url + base + ".jpg", timeout=30) as r:
        data = r.read()
    assert r.status == 200 and data[:3] == b"\xff\xd8\xff", f"{base}.jpg is not served as a JPEG"

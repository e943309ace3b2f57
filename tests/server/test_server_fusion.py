"""Flow-guided fusion in a real ComfyUI server: the video_edit_fusion example with its source frames at
another size than the frames encoded, or cut to fewer frames, stops with an error that names Flow Guided
Fusion and gives both sizes/counts; the same example wired correctly runs afterwards. (The example itself
runs in test_server_workflows.py.)"""
from __future__ import annotations

import copy

import cfa_serverkit as kit
import cfa_test_graphs as graphs

NAME = "video_edit_fusion"


def _example(fixtures, seed):
    return graphs.with_seed(graphs.apply_overrides(graphs.load_api(NAME), fixtures, NAME), seed)


def _source_flow_input(api):
    (flow,) = graphs.nodes_of(api, "CFA_SourceFlow")
    return flow, api[flow]["inputs"]["source"]


def mismatched_size(fixtures):
    """The Source Flow gets the frames rescaled to BAD_SIZE x TEST_SIZE (another aspect ratio) while the latent
    is encoded at TEST_SIZE x TEST_SIZE."""
    api = _example(fixtures, 11)
    flow, link = _source_flow_input(api)
    big = graphs._fresh_id(api)
    api[big] = copy.deepcopy(api[link[0]])
    api[big]["inputs"].update(width=graphs.BAD_SIZE, height=graphs.TEST_SIZE)
    api[flow]["inputs"]["source"] = [big, 0]
    return api


def fewer_frames(fixtures):
    """The Source Flow gets only the first 3 frames."""
    api = _example(fixtures, 12)
    flow, link = _source_flow_input(api)
    cut = graphs._fresh_id(api)
    api[cut] = {"class_type": "ImageFromBatch", "inputs": {"image": link, "batch_index": 0, "length": 3}}
    api[flow]["inputs"]["source"] = [cut, 0]
    return api


def _message(result):
    assert result.outcome == "error", f"expected a failed prompt: {result.describe()}"
    err = result.error or {}
    assert err.get("exception_type") not in ("AttributeError", "TypeError", "KeyError", "IndexError",
                                             "RuntimeError"), result.describe()
    return str(err.get("exception_message", ""))


def test_mismatched_source_is_a_clear_error_then_the_example_runs(comfy_server, pack_nodes):
    fx = comfy_server.fixtures
    msg = _message(comfy_server.run_prompt(mismatched_size(fx), timeout=240))
    size, bad = graphs.TEST_SIZE, graphs.BAD_SIZE
    assert "Flow Guided Fusion" in msg and f"{bad}x{size} pixels" in msg and f"{size // 8}x{size // 8}" in msg, msg

    msg = _message(comfy_server.run_prompt(fewer_frames(fx), timeout=240))
    assert "Flow Guided Fusion" in msg and f"has {fx['frames']} frame(s) but the source flow has 3" in msg, msg

    good = comfy_server.run_prompt(_example(fx, 13), timeout=240)
    assert good.outcome == "success", good.describe()
    graphs.check_example_outputs(NAME, kit.output_files(comfy_server, good), fx)

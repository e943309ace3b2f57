"""Real ComfyUI server (main.py --cpu on 127.0.0.1): every API example runs and produces the right output;
broken graphs fail with an error that names this pack's node, and the server keeps working after them."""
from __future__ import annotations

import time

import pytest

import cfa_serverkit as kit
import cfa_test_graphs as graphs
import cfa_workflow_tools as wt

API_NAMES = wt.api_names()


def test_pack_loaded(pack_nodes):
    # the examples' own node types must all be served by this pack
    used = set()
    for name in API_NAMES:
        used |= {e["class_type"] for e in graphs.load_api(name).values() if e["class_type"].startswith("CFA_")}
    assert used, "the examples use none of this pack's nodes"
    missing = used - set(pack_nodes)
    assert not missing, f"examples use {sorted(missing)}, which the loaded pack does not provide"


@pytest.mark.parametrize("name", API_NAMES)
def test_api_example_runs(name, comfy_server, pack_nodes, comfy_version):
    """Every example runs on the fixtures (the Flux one with a CLIP-L stand-in for T5-XXL: see
    cfa_make_fixtures)."""
    why = graphs.not_runnable(name, comfy_version)
    if why:
        pytest.skip(why)
    fx = comfy_server.fixtures
    prompt = graphs.with_text_encoder_standin(graphs.apply_overrides(graphs.load_api(name), fx, name), fx)
    result = comfy_server.run_prompt(prompt, timeout=240)
    assert result.outcome == "success", f"{name}: {result.describe()}\n{comfy_server.log_tail(3000)}"
    assert result.history and result.history.get("status", {}).get("status_str") == "success", result.history
    graphs.check_example_outputs(name, kit.output_files(comfy_server, result), fx)
    print(f"\n[cfa] {name}: {result.seconds:.1f}s")


def _names_our_node(result, pack_nodes):
    """True when the failure is attributed to, or its message names, one of this pack's nodes."""
    err = result.error or {}
    if err.get("node_type") in pack_nodes:
        return True
    text = str(err.get("exception_message", "")) + str(result.response)
    names = {v.get("display_name") for v in pack_nodes.values()} | set(pack_nodes)
    return any(n and n in text for n in names)


def _assert_clear_failure(result, pack_nodes, what):
    assert result.outcome in ("error", "rejected"), f"{what} was expected to fail but: {result.describe()}"
    if result.outcome == "rejected":
        assert result.http_status == 400, result.describe()
    else:
        assert result.error.get("exception_type") not in (
            "AttributeError", "TypeError", "KeyError", "IndexError", "UnboundLocalError", "NameError"), \
            f"{what} failed with an internal error instead of a clear one: {result.describe()}"
    assert _names_our_node(result, pack_nodes), f"{what}: the error does not name our node: {result.describe()}"


def test_bad_prompts_then_good(comfy_server, pack_nodes):
    fx = comfy_server.fixtures
    t0 = time.time()

    bad = comfy_server.run_prompt(graphs.load_before_store(fx), timeout=180)
    _assert_clear_failure(bad, pack_nodes, "LOAD before STORE")
    assert "empty" in str(bad.error or bad.response).lower() or "never" in str(bad.error or bad.response).lower(), \
        f"LOAD before STORE should say the state is empty: {bad.describe()}"

    bad = comfy_server.run_prompt(graphs.resolution_mismatch(fx), timeout=180)
    _assert_clear_failure(bad, pack_nodes, "frames at another resolution than the reference")
    msg = str((bad.error or {}).get("exception_message", bad.response))
    assert str(graphs.BAD_SIZE) in msg and str(graphs.TEST_SIZE) in msg, \
        f"the resolution error should give both sizes ({graphs.TEST_SIZE}, {graphs.BAD_SIZE}): {msg}"

    # the server is still healthy and the same kind of graph works when wired correctly
    good = graphs.with_seed(graphs.apply_overrides(graphs.load_api("manual_store_load"), fx, "manual_store_load"), 7)
    result = comfy_server.run_prompt(good, timeout=240)
    assert result.outcome == "success", f"good prompt after bad ones: {result.describe()}"
    videos = kit.output_files(comfy_server, result)
    frames, _ = graphs.video_frames(videos[0])
    assert frames.shape[0] == fx["frames"]
    print(f"\n[cfa] bad+bad+good prompts: {time.time() - t0:.1f}s")


def test_queue_is_empty_afterwards(comfy_server):
    queue = comfy_server.get("/queue")
    assert not queue.get("queue_running") and not queue.get("queue_pending"), queue

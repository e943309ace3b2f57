"""ComfyUI's cache against our side-effect state: Batch Video Sampler reading a Store state must re-run when
only the reference changes (through its reference_latent link), and must come from cache when nothing did."""
from __future__ import annotations

import cfa_test_graphs as graphs

BVS = "8"


def reference_graph(fixtures, reference_seed):
    api = graphs.store_reference_graph(fixtures, reference_seed)
    api["9"] = {"class_type": "VAEDecode", "inputs": {"samples": [BVS, 0], "vae": ["1", 2]}}
    api["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}}
    return api


def executed(result):
    ran = {m["data"].get("node") for m in result.messages if m.get("type") == "executing"}
    cached = set()
    for m in result.messages:
        if m.get("type") == "execution_cached":
            cached |= set(m["data"].get("nodes") or [])
    return ran - {None}, cached


def test_changed_reference_reruns_the_video_sampler(comfy_server):
    fx = comfy_server.fixtures
    first = comfy_server.run_prompt(reference_graph(fx, 1), timeout=240)
    assert first.outcome == "success", first.describe()
    assert BVS in executed(first)[0]

    same = comfy_server.run_prompt(reference_graph(fx, 1), timeout=240)
    assert same.outcome == "success", same.describe()
    ran, cached = executed(same)
    assert BVS not in ran and BVS in cached, (ran, cached)

    changed = comfy_server.run_prompt(reference_graph(fx, 2), timeout=240)
    assert changed.outcome == "success", changed.describe()
    ran, cached = executed(changed)
    assert {"7", BVS} <= ran, f"a new reference must re-run the video sampler: ran {ran}, cached {cached}"

"""ComfyUI's cache against our side-effect state: Batch Video Sampler reading a Store state must re-run when
only the reference changes (through its reference_latent link), and must come from cache when nothing did."""
from __future__ import annotations

import cfa_test_graphs as graphs

BVS = "8"


def reference_graph(fixtures, reference_seed):
    ckpt, size, steps = fixtures["checkpoint"], graphs.TEST_SIZE, graphs.TEST_STEPS
    sampling = {"steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 3}},
        # Written before keep_recordings existed (it is optional): API prompts of that time must still run.
        "6": {"class_type": "CFA_StoreReferenceAttention",
              "inputs": {"model": ["1", 0], "blocks": "output", "bank_device": "auto", "bank_dtype": "auto"}},
        "7": {"class_type": "KSampler",
              "inputs": {"model": ["6", 0], "seed": reference_seed, "positive": ["2", 0], "negative": ["3", 0],
                         "latent_image": ["4", 0], **sampling}},
        BVS: {"class_type": "CFA_BatchVideoSampler",
              "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0],
                         "seed": 1, **sampling, "frames_per_batch": 0, "anchors": "first+previous",
                         "include_self": False, "blocks": "output", "start_percent": 0.0, "end_percent": 1.0,
                         "bank_device": "auto", "bank_dtype": "auto", "output_state": False,
                         "state": ["6", 1], "reference_latent": ["7", 0]}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": [BVS, 0], "vae": ["1", 2]}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
    }


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

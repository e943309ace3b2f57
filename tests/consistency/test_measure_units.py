"""The measurement's contract on synthetic clips: inputs, conventions, JSON, plot."""
import json
import math

import numpy as np
import pytest
import torch

from cfa_consistency import RaftLikeFlow, measure_consistency, render_plot, to_uint8_frames
from cfa_consistency.plot import RESULT_STYLE, SOURCE_STYLE


def textured_clip(frames=5, height=60, width=90, dx=2, seed=0):
    """A smooth random texture panning dx px per frame (integer shifts: the true flow is exact)."""
    rng = np.random.default_rng(seed)
    big = rng.random((height // 4 + 4, (width + dx * frames) // 4 + 4, 3)).astype(np.float32)
    import cv2
    big = cv2.resize(big, (big.shape[1] * 4, big.shape[0] * 4), interpolation=cv2.INTER_CUBIC)
    big = (np.clip(big, 0, 1) * 255).astype(np.uint8)
    return np.stack([big[:height, dx * t:dx * t + width] for t in range(frames)])


def test_inputs_are_checked():
    clip = textured_clip()
    with pytest.raises(ValueError, match="at least 2"):
        measure_consistency(clip[:1])
    with pytest.raises(ValueError, match="same frame count and size"):
        measure_consistency(clip, source=clip[:4])
    with pytest.raises(ValueError, match="same frame count and size"):
        measure_consistency(clip, source=clip[:, :50])
    with pytest.raises(ValueError, match="RGB"):
        measure_consistency(clip[..., 0])


def test_comfy_images_and_uint8_give_the_same_scores():
    clip = textured_clip()
    as_tensor = torch.from_numpy(clip).float() / 255.0  # ComfyUI IMAGE: T x H x W x 3 in [0, 1]
    assert np.array_equal(to_uint8_frames(as_tensor), clip)
    a = measure_consistency(clip).summary()
    b = measure_consistency(as_tensor).summary()
    assert a == b


def test_progress_callback_sees_every_pair_and_can_stop():
    clip = textured_clip(frames=6)
    seen = []
    measure_consistency(clip, on_frame=lambda done, total: seen.append((done, total)))
    assert seen == [(t, 5) for t in range(1, 6)]

    class Stop(Exception):
        pass

    def stop_at_3(done, total):
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        measure_consistency(clip, on_frame=stop_at_3)


class ConstantFlowModule(torch.nn.Module):
    """Stands in for RAFT's calling convention (img1, img2 in [-1, 1], sides multiples of 8, list of flows
    out) and returns a known flow, so our padding, cropping and direction can be checked without weights."""

    def __init__(self, flow_xy):
        super().__init__()
        self.flow_xy = flow_xy
        self.calls = []

    def forward(self, img1, img2):
        self.calls.append((tuple(img1.shape), float(img1.min()), float(img1.max())))
        n, _, h, w = img1.shape
        flow = torch.zeros(n, 2, h, w)
        flow[:, 0], flow[:, 1] = self.flow_xy
        return [flow * 0.5, flow]  # RAFT returns refinements; the last one is the answer


def test_raft_convention_wrapper_pads_crops_and_keeps_direction():
    clip = textured_clip(frames=4, height=60, width=90, dx=2)  # 60x90: neither side a multiple of 8
    module = ConstantFlowModule((2.0, 0.0))  # frame t at x equals frame t-1 at x + 2: the true backward flow
    report = measure_consistency(clip, flow=RaftLikeFlow(module, min_side=8), mask_occlusions=False)
    assert {c[0] for c in module.calls} == {(1, 3, 64, 96)}
    module.calls.clear()
    measure_consistency(clip[:2], flow=RaftLikeFlow(module), mask_occlusions=False)
    assert {c[0] for c in module.calls} == {(1, 3, 128, 128)}  # RAFT's minimum size, cropped back
    assert all(-1.0 <= lo and hi <= 1.0 for _, lo, hi in module.calls)
    assert report.flow_method == "RAFT"
    assert report.summary()["flow_magnitude_mean"] == pytest.approx(2.0)
    # Right flow: only the 2-px strip entering on the right (sampled outside, read as black) can be wrong.
    assert report.summary()["result"]["warp_error_max"] <= 2 / 90 * 255 + 0.01
    wrong = measure_consistency(clip, flow=RaftLikeFlow(ConstantFlowModule((-2.0, 0.0))), mask_occlusions=False)
    assert wrong.summary()["result"]["warp_error_mean"] > 3 * report.summary()["result"]["warp_error_mean"]


def test_masking_drops_the_entering_strip_and_inconsistent_flow():
    clip = textured_clip(frames=4, height=60, width=90, dx=2)
    masked = measure_consistency(clip).summary()  # DIS: backward ~(+2, 0), forward ~(-2, 0)
    assert masked["result"]["warp_error_max"] < 1.0
    assert 0.9 < masked["trusted_fraction_mean"] <= 88 / 90 + 0.01  # at least the entering 2-px strip goes
    # A flow whose forward and backward estimates do not undo each other trusts no pixel: no score at all
    # rather than a score from bad pixels.
    same_both_ways = RaftLikeFlow(ConstantFlowModule((2.0, 0.0)))
    report = measure_consistency(clip, flow=same_both_ways)
    assert report.summary()["trusted_fraction_mean"] == 0.0
    assert all(math.isnan(v) for v in report.result.warp_error[1:])
    assert report.summary()["result"]["warp_error_mean"] is None


def test_json_is_strict_and_complete():
    clip = textured_clip()
    source = clip.copy()
    result = np.clip(clip.astype(np.int16) + np.array([0, 9, 0, 9, 0])[:, None, None, None], 0, 255)
    report = measure_consistency(result.astype(np.uint8), source=source)
    data = json.loads(report.to_json(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["frames"] == 5 and data["flow"] == {"method": "OpenCV DIS (medium)", "computed_on": "source"}
    per_frame = data["per_frame"]
    assert per_frame["result"]["warp_error"][0] is None and per_frame["result"]["drift"][0] == 0.0
    assert len(per_frame["source"]["flicker"]) == 5
    assert data["summary"]["result"]["flicker_mean"] == pytest.approx(9.0, abs=0.2)
    assert data["summary"]["source"]["flicker_mean"] < 0.5
    assert data["text"] == report.summary_line() and "vs source" in data["text"]
    # A frame without any trusted pixel scores NaN internally and null in JSON.
    report.result.warp_error[2] = math.nan
    assert json.loads(report.to_json())["per_frame"]["result"]["warp_error"][2] is None


def _has_colour(image, hex_colour, min_pixels=200):
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image.astype(np.int16) - rgb).sum(axis=-1) < 30).sum()) >= min_pixels


def test_plot_draws_result_and_source_curves():
    clip = textured_clip(frames=8)
    with_source = render_plot(measure_consistency(clip, source=clip), title="t", width=800, height=600)
    alone = render_plot(measure_consistency(clip), width=640, height=480)
    assert with_source.shape == (600, 800, 3) and with_source.dtype == np.uint8
    assert alone.shape == (480, 640, 3)
    assert _has_colour(with_source, RESULT_STYLE["color"]) and _has_colour(with_source, SOURCE_STYLE["color"])
    assert _has_colour(alone, RESULT_STYLE["color"]) and not _has_colour(alone, SOURCE_STYLE["color"], 20)

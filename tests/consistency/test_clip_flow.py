"""The clip flow behind Source Flow (consistency/clip_flow.py) on real footage: the thread pool gives exactly
the serial result, the round-trip error reproduces the measurement's occlusion mask, work stops when the
progress callback raises, and it runs under torch's inference mode (ComfyUI runs nodes in it)."""
import numpy as np
import pytest
import torch



@pytest.fixture(scope="module")
def cf():
    import importlib
    return importlib.import_module("cfa_consistency.clip_flow")


@pytest.fixture(scope="module")
def clip(bikes):
    import cv2
    return np.stack([cv2.resize(f, (320, 136), interpolation=cv2.INTER_AREA) for f in bikes[:6]])


def test_threads_give_the_serial_result_and_the_measurement_mask(cf, clip):
    from cfa_consistency.flow import DisFlow
    from cfa_consistency.warp import Grid, consistent_pixels
    pairs = cf.previous_pairs(len(clip))
    flow, excess = cf.clip_flows(clip, pairs, workers=3)
    serial_flow, serial_excess = cf.clip_flows(clip, pairs, workers=1)
    assert torch.equal(flow, serial_flow) and torch.equal(excess, serial_excess)
    assert flow.shape == (6, 2, 136, 320) and torch.isinf(excess[0]).all()
    dis, grid = DisFlow(), Grid(136, 320)
    for t in (1, 4):
        backward, forward = dis(clip[t], clip[t - 1]), dis(clip[t - 1], clip[t])
        assert np.array_equal(flow[t].permute(1, 2, 0).numpy(), backward)
        assert np.array_equal((excess[t, 0] < 0.5).numpy(), consistent_pixels(backward, forward, grid))
    assert flow[1:].abs().mean() > 1.0          # bikes moves (several pixels per frame)
    first, _ = cf.clip_flows(clip, cf.first_pairs(len(clip)), workers=2)
    assert first[1:].abs().mean() > flow[1:].abs().mean()   # frame 0 is further away than the previous frame


def test_a_raising_progress_callback_stops_the_work(cf, clip):
    calls = []

    def stop():
        calls.append(1)
        raise KeyboardInterrupt("cancel")
    for workers in (1, 2):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            cf.clip_flows(clip, cf.previous_pairs(len(clip)), workers=workers, on_pair=stop)
        assert calls == [1]


def test_runs_under_inference_mode(cf, clip):
    with torch.inference_mode():
        flow, excess = cf.clip_flows(clip[:3], cf.previous_pairs(3), workers=2)
    assert flow.shape[0] == 3 and torch.isfinite(excess[1:]).any()

"""Windows inside one model evaluation: a clip evaluated a few frames at a time, in clip order, equals the
whole clip and the frame-by-frame definition; keyframe anchors; what is carried and what is refused."""
import pytest
import torch

from cross_frame_attention import CrossFrameError, CrossFrameOptions, FrameRun, RunPlan
from cross_frame_attention.windows import largest_window, window_bounds

import toy_unet as toy
from toy_unet import group_of

TOL = 1e-5


def clip(frames=5, seed=3):
    return torch.randn(frames, toy.TOKENS, toy.CHANNELS, generator=torch.Generator().manual_seed(seed))


@pytest.mark.thread_sensitive
@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("layout,kw", [([1, 0], {}), ([0], {}), ([0, 0, 1], {"split_calls": True}),
                                       ([1, 0], {"heun": True})])
def test_windows_equal_the_whole_clip_and_frame_by_frame(size, layout, kw):
    weights, x = toy.make_weights(), clip()
    want = toy.frame_by_frame(x, weights, layout, **kw)
    whole = FrameRun(RunPlan(frames=5, options=CrossFrameOptions()), group_of(layout))
    got_whole = toy.denoise(x, weights, layout, whole.kv, **kw)
    run = FrameRun(RunPlan(frames=5, options=CrossFrameOptions()), group_of(layout))
    got = toy.windowed(run, size)(x, weights, layout, **kw)
    assert (got_whole - want).abs().max() <= TOL * want.abs().max()
    assert (got - want).abs().max() <= TOL * want.abs().max()
    plain = toy.denoise(x, weights, layout, lambda *a: None, **kw)
    assert (plain - want).abs().max() > 1e-2 * want.abs().max()       # the method acts


@pytest.mark.parametrize("size", [0, 1, 2, 3])
@pytest.mark.parametrize("every", [1, 2, 3])
def test_keyframe_anchors_equal_their_frame_by_frame_definition(size, every):
    weights, x, layout = toy.make_weights(), clip(7), [1, 0]
    want = toy.frame_by_frame(x, weights, layout, anchor_every=every)
    run = FrameRun(RunPlan(frames=7, options=CrossFrameOptions(anchor_every=every)), group_of(layout))
    got = toy.denoise(x, weights, layout, run.kv) if size == 0 else toy.windowed(run, size)(x, weights, layout)
    assert (got - want).abs().max() <= TOL * want.abs().max()
    without = toy.frame_by_frame(x, weights, layout)
    assert (want[every:] - without[every:]).abs().max() > 1e-3 * want.abs().max()   # keyframes change it


def test_the_carry_holds_two_frames_per_layer_and_conditioning_for_one_evaluation():
    weights, x, layout = toy.make_weights(), clip(), [1, 0]
    run = FrameRun(RunPlan(frames=5, options=CrossFrameOptions()), group_of(layout))
    toy.windowed(run, 2)(x, weights, layout)
    frame_bytes = toy.TOKENS * toy.CHANNELS * 4
    assert run.carry.peak_bytes == 2 * frame_bytes * toy.LAYERS * len(layout)
    assert run.carry.nbytes == 0                      # nothing outlives the evaluation


def test_a_window_whose_previous_frame_was_not_evaluated_first_is_refused():
    run = FrameRun(RunPlan(frames=6, options=CrossFrameOptions(), who="Node"))
    run.begin_evaluation()
    with pytest.raises(CrossFrameError, match="Node: a context window of clip frames 3..5 needs frame 0.*"
                                              "'batched' or 'standard_static'"):
        run.kv("L", torch.zeros(3, 4, 2), [0], 1.0, None, (3, 4, 5))
    with pytest.raises(CrossFrameError, match="not consecutive.*Looped context schedules"):
        run.kv("L", torch.zeros(3, 4, 2), [0], 1.0, None, (5, 0, 1))
    run.end_evaluation()
    run.kv("L", torch.zeros(2, 4, 2), [0], 1.0, None, (0, 1))          # fine: frame 0 needs nothing earlier
    with pytest.raises(CrossFrameError, match="needs frame 0"):          # outside an evaluation: no carry
        run.kv("L", torch.zeros(2, 4, 2), [0], 1.0, None, (2, 3))


def test_a_users_overlapping_windows_read_the_frame_before_from_the_earlier_window():
    """keep_window: the frame before a window may sit anywhere in the previous window (overlap)."""
    weights, x, layout = toy.make_weights(), clip(), [1, 0]
    want = toy.frame_by_frame(x, weights, layout)
    run = FrameRun(RunPlan(frames=5, options=CrossFrameOptions(), keep_window=True), group_of(layout))
    windows = [(0, 3), (1, 4), (3, 5)]   # overlapping, in clip order; the last one restarts inside the second

    def one_evaluation(xe, w, lay, kv_source, sigma, split_calls=False):
        run.begin_evaluation()
        out, count = torch.zeros_like(xe), torch.zeros(xe.shape[0], 1, 1)
        for s, e in windows:
            frames = tuple(range(s, e))
            out[s:e] += toy.evaluate(xe[s:e], w, lay, lambda *a, f=frames: run.kv(*a, f), sigma, split_calls)
            count[s:e] += 1
        run.end_evaluation()
        return out / count
    got = toy.denoise(x, weights, layout, None, evaluator=one_evaluation)
    assert (got - want).abs().max() <= TOL * want.abs().max()


def test_window_sizes_from_a_budget():
    assert window_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)] and window_bounds(5, 0) == [(0, 5)]
    assert largest_window(100, lambda k: k * 3 <= 50) == 16
    assert largest_window(10, lambda k: True) == 10 and largest_window(10, lambda k: False) == 1
    with pytest.raises(CrossFrameError, match="anchor_every=-1"):
        CrossFrameOptions(anchor_every=-1, who="Node")

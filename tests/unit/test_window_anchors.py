"""Cross-window anchors (attention/window_anchors.py) on synthetic keys/values: what window 0 records and
leaves alone, what a later window gets appended, per conditioning and per step, whatever the calls look like."""
import copy

import pytest
import torch

from cross_frame_attention import CrossFrameError
from cross_frame_attention.window_anchors import WindowAnchors, WindowCall

HW, C = 3, 4   # tokens per latent frame, channels (heads * head dim)


def frames_kv(frames, chunks=1, seed=0):
    """Keys/values of a window: every token of clip frame f (chunk c) holds a value that names it."""
    g = torch.Generator().manual_seed(seed)
    k = torch.stack([torch.cat([torch.full((HW, C), 100.0 * c + f) for f in frames]) for c in range(chunks)])
    k = k + 0.001 * torch.rand(k.shape, generator=g)
    return k, -k


def call(frames, sigma=1.0, chunks=((0, "p"),), leading=0):
    return WindowCall(frames=tuple(frames), tokens_per_frame=HW, sigma=sigma, chunks=tuple(chunks),
                      leading=leading)


def frame_ids(rows):
    """The clip frame each block of HW rows came from (chunk 0's numbering)."""
    return [round(float(rows[i * HW, 0]) % 100) for i in range(rows.shape[0] // HW)]


def run_windows(anchors, windows, sigma=1.0, chunks=((0, "p"),), leading=()):
    state = WindowAnchors(anchors)
    outs = []
    for i, frames in enumerate(windows):
        k, v = frames_kv(frames, len(chunks))
        outs.append(state.kv(0, call(frames, sigma, chunks, leading[i] if leading else 0), k, v))
    return outs


def test_window_zero_is_unchanged_and_later_windows_get_first_and_previous_appended():
    windows = [range(0, 3), range(3, 6), range(6, 8)]
    outs = run_windows("first+previous", windows)
    k0, v0 = frames_kv(windows[0])
    assert torch.equal(outs[0][0], k0) and torch.equal(outs[0][1], v0)        # window 0: untouched
    assert frame_ids(outs[1][0][0]) == [3, 4, 5, 0, 2]                      # own frames, then first, previous
    assert frame_ids(outs[2][0][0]) == [6, 7, 0, 5]
    assert torch.equal(outs[2][1][0, -HW:], -outs[1][0][0, 2 * HW:3 * HW])   # values follow their keys
    assert frame_ids(run_windows("first", windows)[2][0][0]) == [6, 7, 0]
    assert frame_ids(run_windows("previous", windows)[2][0][0]) == [6, 7, 5]


def test_one_window_covering_the_clip_is_left_alone():
    (k, v), = run_windows("first+previous", [range(5)])
    k0, v0 = frames_kv(range(5))
    assert torch.equal(k, k0) and torch.equal(v, v0)


def test_overlapping_windows_and_the_causal_frame_use_the_previous_windows_last_frame():
    # standard_static with overlap 1 and core's causal_window_fix: window 1 holds frame 2 first (the frame
    # before it), then 3..5; its previous anchor is window 0's last frame (3), even though 3 is also its own.
    outs = run_windows("first+previous", [range(0, 4), (2, 3, 4, 5), (4, 5, 6, 7)], leading=(0, 1, 1))
    assert frame_ids(outs[1][0][0]) == [2, 3, 4, 5, 0, 3]
    assert frame_ids(outs[2][0][0]) == [4, 5, 6, 7, 0, 5]
    # overlap 2: window 1 is frames 1..3 with frame 0 prepended; it holds frame 0 but is not window 0
    outs = run_windows("first+previous", [range(0, 3), (0, 1, 2, 3)], leading=(0, 1))
    assert frame_ids(outs[1][0][0]) == [0, 1, 2, 3, 0, 2]


def test_each_conditioning_gets_its_own_anchors_batched_or_not():
    chunks = ((1, "n"), (0, "p"))   # ComfyUI's usual order: uncond first
    batched = run_windows("first+previous", [range(0, 2), range(2, 4)], chunks=chunks)[1]
    state = WindowAnchors("first+previous")
    for frames in (range(0, 2), range(2, 4)):
        k, v = frames_kv(frames, 2)
        split = [state.kv(0, call(frames, chunks=(chunk,)), k[i:i + 1], v[i:i + 1])
                 for i, chunk in enumerate(chunks)]
    assert torch.equal(batched[0], torch.cat([s[0] for s in split]))
    assert torch.equal(batched[1], torch.cat([s[1] for s in split]))
    # chunk 1's anchors are chunk 1's frames (100 + f), never chunk 0's
    assert (batched[0][1, -2 * HW:, 0] >= 100).all() and (batched[0][0, -2 * HW:, 0] < 100).all()


def test_layers_and_steps_do_not_mix():
    state = WindowAnchors("first+previous")
    k, v = frames_kv(range(0, 2))
    state.kv(0, call(range(0, 2), sigma=2.0), k, v)
    state.kv(1, call(range(0, 2), sigma=2.0), k * 3, v)
    k1, v1 = frames_kv(range(2, 4))
    out0, _ = state.kv(0, call(range(2, 4), sigma=2.0), k1, v1)
    out1, _ = state.kv(1, call(range(2, 4), sigma=2.0), k1, v1)
    assert torch.equal(out1[:, 4 * HW:], 3 * out0[:, 4 * HW:])
    # the next step must record its own window 0 first: anchors from another noise level are refused
    with pytest.raises(CrossFrameError, match="Cross-Window Anchors: the window of frames 2..3 came at noise "
                                              "level sigma=1.*before the window holding frame 0"):
        state.kv(0, call(range(2, 4), sigma=1.0), k1, v1)


def test_windows_out_of_clip_order_are_refused():
    state = WindowAnchors("previous")
    for frames in (range(0, 2), range(4, 6)):
        state.kv(0, call(frames), *frames_kv(frames))
    with pytest.raises(CrossFrameError, match="Cross-Window Anchors: the window of frames 2..3 came after the "
                                              "window of frames 4..5.*'batched' or 'standard_static'"):
        state.kv(0, call(range(2, 4)), *frames_kv(range(2, 4)))


def test_outside_the_active_sigmas_nothing_is_recorded_or_appended():
    state = WindowAnchors("first+previous", active_sigmas=(5.0, 2.0))
    for sigma, appended in ((6.0, False), (3.0, True), (1.0, False)):
        state.kv(0, call(range(0, 2), sigma), *frames_kv(range(0, 2)))
        k, _ = state.kv(0, call(range(2, 4), sigma), *frames_kv(range(2, 4)))
        assert (k.shape[1] > 2 * HW) == appended, sigma


def test_bad_layouts_are_refused_and_deepcopy_keeps_one_state():
    state = WindowAnchors("first+previous")
    k, v = frames_kv(range(0, 2))
    with pytest.raises(CrossFrameError, match="holds 5 tokens.*2 latent frames of 3 tokens"):
        state.kv(0, call(range(0, 2)), k[:, :5], v[:, :5])
    with pytest.raises(CrossFrameError, match="batch of 1.*2 conditionings"):
        state.kv(0, call(range(0, 2), chunks=((0, "p"), (1, "n"))), k, v)
    with pytest.raises(CrossFrameError, match="anchors='last'"):
        WindowAnchors("last")
    with pytest.raises(CrossFrameError, match="keep_anchors_on='disk'; use one of cpu, gpu"):
        WindowAnchors(keep="disk")
    assert copy.deepcopy(state) is state
    frame_bytes = 2 * HW * C * 4                     # one frame's keys and values, fp32
    state.kv(0, call(range(0, 2)), k, v)
    assert state.nbytes() == {"device": 0, "host": 2 * frame_bytes}     # first + last frame
    on_gpu = WindowAnchors(keep="gpu")
    on_gpu.kv(0, call(range(0, 2)), k, v)
    assert on_gpu.nbytes() == {"device": 2 * frame_bytes, "host": 0}
    state.reset()
    assert state.nbytes() == {"device": 0, "host": 0}
    for anchors in ("first", "previous"):            # only what the choice reads is kept
        one = WindowAnchors(anchors)
        one.kv(0, call(range(0, 2)), k, v)
        assert one.nbytes()["host"] == frame_bytes

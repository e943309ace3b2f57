"""The method inside real ComfyUI: windows, the manual STORE/LOAD graph and the plain sampler agree where
they must, and differ where the method acts. Tiny random U-Net, euler, fp32, CPU."""
import copy

import pytest
import torch

from graph_helpers import (ksampler, latent_from_batch, patch, rel_diff, store, video_sampler)

TOL = 1e-4  # relative to the output scale


@pytest.fixture(scope="module")
def whole_clip(comfy, tiny_model, conds, clip_latent):
    return video_sampler(comfy, tiny_model, conds, clip_latent)[0]


@pytest.mark.thread_sensitive
@pytest.mark.parametrize("frames_per_batch", [1, 2, 3])
def test_window_size_does_not_change_the_output(comfy, tiny_model, conds, clip_latent, whole_clip,
                                               frames_per_batch):
    windowed, _ = video_sampler(comfy, tiny_model, conds, clip_latent, frames_per_batch=frames_per_batch)
    assert windowed["samples"].shape == clip_latent["samples"].shape
    assert rel_diff(windowed, whole_clip) <= TOL


@pytest.mark.thread_sensitive
def test_frame_zero_is_plain_ksampler_and_the_method_acts(comfy, tiny_model, conds, clip_latent, whole_clip):
    plain_all = ksampler(comfy, tiny_model, conds, clip_latent)
    frame0 = ksampler(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 1))
    assert rel_diff(whole_clip["samples"][:1], frame0["samples"]) <= TOL
    assert rel_diff(plain_all["samples"][:1], frame0["samples"]) <= TOL   # same noise as KSampler
    assert rel_diff(whole_clip["samples"][1:], plain_all["samples"][1:]) > 1e-2


def test_cfg_one_works_and_differs_from_plain(comfy, tiny_model, conds, clip_latent):
    cross, _ = video_sampler(comfy, tiny_model, conds, clip_latent, cfg=1.0)
    windowed, _ = video_sampler(comfy, tiny_model, conds, clip_latent, cfg=1.0, frames_per_batch=2)
    plain = ksampler(comfy, tiny_model, conds, clip_latent, cfg=1.0)
    assert rel_diff(windowed, cross) <= TOL
    assert rel_diff(cross["samples"][1:], plain["samples"][1:]) > 1e-2


@pytest.mark.thread_sensitive
def test_identical_frames_equal_plain_ksampler(comfy, tiny_model, conds, clip_latent):
    """Same frame, same noise (batch_index 0 for all): attending to copies of itself is plain attention."""
    frame = clip_latent["samples"][:1]
    clip = {"samples": frame.repeat(4, 1, 1, 1), "batch_index": [0, 0, 0, 0]}
    cross, _ = video_sampler(comfy, tiny_model, conds, clip, frames_per_batch=3)
    single = ksampler(comfy, tiny_model, conds, {"samples": frame})
    for k in range(4):
        assert rel_diff(cross["samples"][k:k + 1], single) <= TOL


def test_manual_store_load_graph_equals_batch_video_sampler(comfy, tiny_model, conds, clip_latent,
                                                            whole_clip):
    store_model, state = store(comfy, tiny_model)
    reference = ksampler(comfy, store_model, conds, latent_from_batch(comfy, clip_latent, 0, 1))
    assert state.filled and state.runs == 1
    load_model = patch(comfy, tiny_model, state, reference)
    rest = ksampler(comfy, load_model, conds, latent_from_batch(comfy, clip_latent, 1, 4))
    joined = torch.cat([reference["samples"], rest["samples"]])
    assert rel_diff(joined, whole_clip) <= TOL


def test_reference_state_into_batch_video_sampler_and_continuation(comfy, tiny_model, conds, clip_latent,
                                                                   whole_clip):
    """Frames 1..4 anchored on a stored frame 0 equal the whole clip's frames 1..4; a clip split over two
    samplers with output_state continues seamlessly."""
    store_model, state = store(comfy, tiny_model)
    reference = ksampler(comfy, store_model, conds, latent_from_batch(comfy, clip_latent, 0, 1))
    rest, _ = video_sampler(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 1, 4), state=state,
                            reference_latent=reference, frames_per_batch=2)
    assert rel_diff(rest["samples"], whole_clip["samples"][1:]) <= TOL
    head, kept = video_sampler(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 3),
                               output_state=True)
    tail, _ = video_sampler(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 3, 2), state=kept)
    assert rel_diff(torch.cat([head["samples"], tail["samples"]]), whole_clip["samples"]) <= TOL


def test_input_model_is_untouched(comfy, tiny_model, conds, clip_latent):
    before = ksampler(comfy, tiny_model, conds, clip_latent, steps=2)
    options_before = copy.deepcopy(tiny_model.model_options)
    store_model, state = store(comfy, tiny_model)
    reference = ksampler(comfy, store_model, conds, latent_from_batch(comfy, clip_latent, 0, 1), steps=2)
    patch(comfy, tiny_model, state, reference)
    video_sampler(comfy, tiny_model, conds, clip_latent, steps=2, frames_per_batch=2)
    after = ksampler(comfy, tiny_model, conds, clip_latent, steps=2)
    assert torch.equal(before["samples"], after["samples"])
    assert tiny_model.model_options == options_before


def test_downstream_clones_share_the_state(comfy, tiny_model, conds, clip_latent, whole_clip):
    """LoRA loaders and other patch nodes clone (deep-copy) the model; STORE and LOAD must not split."""
    store_model, state = store(comfy, tiny_model)
    cloned = store_model.clone().clone()
    reference = ksampler(comfy, cloned, conds, latent_from_batch(comfy, clip_latent, 0, 1))
    assert state.filled
    load_model = patch(comfy, tiny_model, state, reference).clone()
    load_model.model_options = copy.deepcopy(load_model.model_options)
    rest = ksampler(comfy, load_model, conds, latent_from_batch(comfy, clip_latent, 1, 4))
    assert rel_diff(rest["samples"], whole_clip["samples"][1:]) <= TOL


def test_other_attn1_patches_keep_working(comfy, tiny_model, conds, clip_latent, whole_clip):
    """A no-op attn1 patch from 'another pack', before and after ours, is still called and changes nothing."""
    seen = []

    def other_pack_patch(n, context, value, extra_options):
        seen.append((extra_options["block"][0], context.shape[1] // n.shape[1]))
        return n, context, value

    upstream = tiny_model.clone()
    upstream.set_model_attn1_patch(other_pack_patch)
    out, _ = video_sampler(comfy, upstream, conds, clip_latent)
    assert rel_diff(out, whole_clip) <= TOL
    assert seen and {ratio for block, ratio in seen} == {1}           # upstream of ours: plain K/V
    seen.clear()
    store_model, state = store(comfy, tiny_model)
    reference = ksampler(comfy, store_model, conds, latent_from_batch(comfy, clip_latent, 0, 1))
    downstream = patch(comfy, tiny_model, state, reference)
    downstream.set_model_attn1_patch(other_pack_patch)
    ksampler(comfy, downstream, conds, latent_from_batch(comfy, clip_latent, 1, 4))
    assert {ratio for block, ratio in seen if block == "output"} == {2}  # sees our [first; prev] K/V
    assert {ratio for block, ratio in seen if block != "output"} == {1}


@pytest.mark.parametrize("kw", [dict(anchors="first"), dict(anchors="previous"),
                                dict(include_self=True), dict(blocks="input+middle+output"),
                                dict(start_percent=0.0, end_percent=0.5), dict(bank_device="cpu"),
                                dict(bank_dtype="bfloat16")])
def test_options_keep_windows_exact(comfy, tiny_model, conds, clip_latent, whole_clip, kw):
    one, _ = video_sampler(comfy, tiny_model, conds, clip_latent, **kw)
    windowed, _ = video_sampler(comfy, tiny_model, conds, clip_latent, frames_per_batch=2, **kw)
    if "bank_dtype" in kw:       # a bfloat16 bank rounds the carried frames: close, not exact
        assert 1e-6 < rel_diff(windowed, one) <= 2e-2
        return
    assert rel_diff(windowed, one) <= TOL
    if "bank_device" not in kw:
        assert rel_diff(one, whole_clip) > 1e-3   # each option really changes something

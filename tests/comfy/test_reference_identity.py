"""A Store state must never anchor frames with a recording that does not belong to the reference LATENT they
are given: ComfyUI's caches (LRU, RAM pressure: the default since 2026) can serve the reference sampler's
output from an earlier run while the state holds a later run's recording."""
import pytest
import torch

from graph_helpers import ksampler, latent_from_batch, patch, rel_diff, store, video_sampler


@pytest.fixture
def frames(clip_latent, comfy):
    return latent_from_batch(comfy, clip_latent, 1, 3)


def test_a_then_b_then_cached_a_is_refused_naming_the_fix(comfy, tiny_model, conds, clip_latent, frames):
    """Seed 1, then seed 2, then seed 1 served from cache: the state holds seed 2's recording."""
    reference_in = latent_from_batch(comfy, clip_latent, 0, 1)
    store_model, state = store(comfy, tiny_model)
    ref_a = ksampler(comfy, store_model, conds, reference_in, seed=1, steps=3)
    ref_b = ksampler(comfy, store_model, conds, reference_in, seed=2, steps=3)
    assert rel_diff(ref_a, ref_b) > 0.05, "the two references must differ for this test to mean anything"
    # ref_a now plays the cached LATENT of run A, while the recording is B's
    with pytest.raises(ValueError, match="Batch Video Sampler: reference_latent was not produced by the "
                                         "reference run that Store Reference Attention holds.*cache.*"
                                         "keep_recordings"):
        video_sampler(comfy, tiny_model, conds, frames, state=state, reference_latent=ref_a, steps=3)
    with pytest.raises(ValueError, match="Cross-Frame Attention Patch: reference_latent was not produced"):
        patch(comfy, tiny_model, state, ref_a)
    # B's own LATENT still works
    video_sampler(comfy, tiny_model, conds, frames, state=state, reference_latent=ref_b, steps=3)


def test_a_latent_from_another_source_is_refused(comfy, tiny_model, conds, clip_latent, frames):
    reference_in = latent_from_batch(comfy, clip_latent, 0, 1)
    store_model, state = store(comfy, tiny_model)
    ksampler(comfy, store_model, conds, reference_in, seed=1, steps=3)
    with pytest.raises(ValueError, match="reference_latent was not produced"):
        video_sampler(comfy, tiny_model, conds, frames, state=state, reference_latent=reference_in, steps=3)


def test_kept_recordings_serve_the_reference_they_belong_to(comfy, tiny_model, conds, clip_latent, frames):
    """keep_recordings 2: A -> B -> cached A anchors on A's recording: equal to a fresh A run, not B."""
    reference_in = latent_from_batch(comfy, clip_latent, 0, 1)
    store_model, state = store(comfy, tiny_model, keep_recordings=2)
    ref_a = ksampler(comfy, store_model, conds, reference_in, seed=1, steps=3)
    ref_b = ksampler(comfy, store_model, conds, reference_in, seed=2, steps=3)
    from_cache_a, _ = video_sampler(comfy, tiny_model, conds, frames, state=state, reference_latent=ref_a,
                                    steps=3)
    via_patch_a = ksampler(comfy, patch(comfy, tiny_model, state, ref_a), conds, frames, steps=3)
    from_b, _ = video_sampler(comfy, tiny_model, conds, frames, state=state, reference_latent=ref_b, steps=3)

    fresh_model, fresh = store(comfy, tiny_model)
    fresh_a = ksampler(comfy, fresh_model, conds, reference_in, seed=1, steps=3)
    want_a, _ = video_sampler(comfy, tiny_model, conds, frames, state=fresh, reference_latent=fresh_a, steps=3)
    assert rel_diff(from_cache_a, want_a) < 1e-5
    assert rel_diff(via_patch_a, want_a) < 1e-4
    assert rel_diff(from_b, want_a) > 1e-3, "B's recording must anchor differently from A's"
    # a third run drops the oldest (A) recording
    ksampler(comfy, store_model, conds, reference_in, seed=3, steps=3)
    with pytest.raises(ValueError, match="reference_latent was not produced.*\\(2 kept\\)"):
        video_sampler(comfy, tiny_model, conds, frames, state=state, reference_latent=ref_a, steps=3)


def test_a_reference_in_half_precision_is_still_recognised(comfy, tiny_model, conds, clip_latent, frames):
    """ComfyUI 0.30+ may hand a LATENT on in its intermediate dtype (float16/bfloat16)."""
    reference_in = latent_from_batch(comfy, clip_latent, 0, 1)
    store_model, state = store(comfy, tiny_model)
    ref = ksampler(comfy, store_model, conds, reference_in, seed=1, steps=3)
    for dtype in (torch.float16, torch.bfloat16):
        rounded = {"samples": ref["samples"].to(dtype)}
        video_sampler(comfy, tiny_model, conds, frames, state=state, reference_latent=rounded, steps=3)

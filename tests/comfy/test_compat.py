"""Batch Video Sampler and the Store/Patch pair alongside ComfyUI features that change how the model is
called: area conds (separate calls), combined conds, heun (a sigma evaluated twice), PAG and SAG (extra
passes), other samplers driving the Store model, per-frame noise masks, percent ranges with kept state."""
import pytest
import torch

from graph_helpers import ksampler, latent_from_batch, patch, rel_diff, store, video_sampler

TOL = 1e-4


def window_invariant(comfy, model, conds, latent, **kw):
    """Whole clip vs windows of 2 vs windows of 1; returns the whole-clip output."""
    whole, _ = video_sampler(comfy, model, conds, latent, **kw)
    for fpb in (2, 1):
        windowed, _ = video_sampler(comfy, model, conds, latent, frames_per_batch=fpb, **kw)
        assert rel_diff(windowed, whole) <= TOL, f"frames_per_batch={fpb}"
    return whole


def test_area_conds_in_separate_calls(comfy, tiny_model, conds, clip_latent):
    """A second positive cond on the top half only: ComfyUI evaluates it in its own call."""
    g = torch.Generator().manual_seed(11)
    top = [torch.randn(1, 8, 32, generator=g), {"area": (8, 16, 0, 0), "strength": 1.0,
                                                 "set_area_to_bounds": False}]
    positive = conds[0] + [top]
    whole = window_invariant(comfy, tiny_model, (positive, conds[1]), clip_latent, steps=3)
    plain = ksampler(comfy, tiny_model, (positive, conds[1]), clip_latent, steps=3)
    assert rel_diff(whole["samples"][1:], plain["samples"][1:]) > 1e-2


def test_combined_conds_batched_together(comfy, tiny_model, conds, clip_latent):
    g = torch.Generator().manual_seed(12)
    positive = conds[0] + [[torch.randn(1, 8, 32, generator=g), {}]]
    window_invariant(comfy, tiny_model, (positive, conds[1]), clip_latent, steps=3)


def test_heun_evaluates_each_sigma_twice(comfy, tiny_model, conds, clip_latent):
    whole = window_invariant(comfy, tiny_model, conds, clip_latent, steps=3, sampler_name="heun")
    store_model, state = store(comfy, tiny_model)
    reference = ksampler(comfy, store_model, conds, latent_from_batch(comfy, clip_latent, 0, 1), steps=3,
                         sampler_name="heun")
    rest = ksampler(comfy, patch(comfy, tiny_model, state, reference), conds,
                    latent_from_batch(comfy, clip_latent, 1, 4), steps=3, sampler_name="heun")
    assert rel_diff(torch.cat([reference["samples"], rest["samples"]]), whole) <= TOL


@pytest.mark.parametrize("guidance", ["PAG", "SAG"])
def test_extra_guidance_passes(comfy, tiny_model, conds, clip_latent, guidance):
    """PAG and SAG evaluate the model a second time at the same sigma (perturbed middle block / blurred
    input); those passes must not mix with the frames the next window reads."""
    if guidance == "PAG":
        from comfy_extras.nodes_pag import PerturbedAttentionGuidance
        guided = PerturbedAttentionGuidance.execute(tiny_model, 3.0).args[0]
    else:
        from comfy_extras.nodes_sag import SelfAttentionGuidance
        guided = SelfAttentionGuidance.execute(tiny_model, 0.5, 2.0).args[0]
    if guidance == "PAG":
        whole = window_invariant(comfy, guided, conds, clip_latent, steps=3)
    else:
        # SAG keeps the attention scores of ONE U-Net call and blurs the whole batch with them, so it needs
        # the clip in one call: windows are refused (test_core_patches.py, docs/compatibility.md).
        whole, _ = video_sampler(comfy, guided, conds, clip_latent, steps=3)
        with pytest.raises(ValueError, match="carries Self-Attention Guidance, which cannot be split"):
            video_sampler(comfy, guided, conds, clip_latent, steps=3, frames_per_batch=2)
    plain_guided = ksampler(comfy, guided, conds, clip_latent, steps=3)
    assert rel_diff(whole["samples"][1:], plain_guided["samples"][1:]) > 1e-2


def test_store_model_under_other_samplers(comfy, tiny_model, conds, clip_latent):
    """KSamplerAdvanced (a step range) and a custom sampler loop (SamplerCustomAdvanced's path) both fill
    the state through the same wrapper."""
    import comfy.sample as comfy_sample
    import comfy.samplers as comfy_samplers

    frame0 = latent_from_batch(comfy, clip_latent, 0, 1)
    store_model, state = store(comfy, tiny_model)
    reference = comfy.nodes.KSamplerAdvanced().sample(store_model, "enable", 1, 6, 5.0, "euler", "normal",
                                                      conds[0], conds[1], frame0, 2, 6, "disable")[0]
    assert state.filled and len(state.first.steps) == 4
    rest = comfy.nodes.KSamplerAdvanced().sample(patch(comfy, tiny_model, state, reference), "enable", 1, 6,
                                                 5.0, "euler", "normal", conds[0], conds[1],
                                                 latent_from_batch(comfy, clip_latent, 1, 2), 2, 6, "disable")[0]
    assert torch.isfinite(rest["samples"]).all() and state.first.steps.fallbacks == 0

    store_model, state = store(comfy, tiny_model)
    guider = comfy_samplers.CFGGuider(store_model)
    guider.set_conds(conds[0], conds[1])
    guider.set_cfg(5.0)
    sigmas = comfy_samplers.calculate_sigmas(store_model.get_model_object("model_sampling"), "normal", 3)
    noise = comfy_sample.prepare_noise(frame0["samples"], 1)
    guider.sample(noise, frame0["samples"], comfy_samplers.sampler_object("euler"), sigmas, seed=1)
    assert state.filled and len(state.first.steps) == 3


def test_model_already_patched_is_refused(comfy, tiny_model, conds, clip_latent):
    store_model, state = store(comfy, tiny_model)
    reference = ksampler(comfy, store_model, conds, latent_from_batch(comfy, clip_latent, 0, 1), steps=2)
    load_model = patch(comfy, tiny_model, state, reference)
    with pytest.raises(ValueError, match="Batch Video Sampler: the MODEL input already carries cross-frame "
                                         "attention from Cross-Frame Attention Patch. Connect the original"):
        video_sampler(comfy, load_model, conds, clip_latent, steps=2)
    with pytest.raises(ValueError, match="Cross-Frame Attention Patch: the MODEL input already carries "
                                         "cross-frame attention from Store Reference Attention"):
        patch(comfy, store_model, state, reference)


def test_short_noise_mask_batch_is_spread_over_the_clip(comfy, tiny_model, conds, clip_latent):
    mask = torch.zeros(2, 16, 16)
    mask[0, :8] = 1.0
    mask[1, 8:] = 1.0
    masked = {**clip_latent, "noise_mask": mask}
    whole, _ = video_sampler(comfy, tiny_model, conds, masked, denoise=0.6, steps=3)
    windowed, _ = video_sampler(comfy, tiny_model, conds, masked, denoise=0.6, steps=3, frames_per_batch=3)
    assert rel_diff(windowed, whole) <= TOL


def test_kept_state_covers_steps_outside_the_active_range(comfy, tiny_model, conds, clip_latent):
    """A clip sampled with cross-frame attention on half the schedule still keeps every step, so its
    continuation may use the whole schedule."""
    head, kept = video_sampler(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 3),
                               output_state=True, end_percent=0.5, steps=4)
    assert len(kept.last.steps) == 4 and len(kept.first.steps) == 4
    tail, _ = video_sampler(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 3, 2), state=kept,
                            steps=4)
    assert kept.first.steps.fallbacks == 0 and torch.isfinite(tail["samples"]).all()

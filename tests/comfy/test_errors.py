"""Every misuse ends in a CrossFrameError (a ValueError ComfyUI shows as is) naming the node and the fix."""
import gc
import logging
import sys

import pytest
import torch

from graph_helpers import ksampler, latent_from_batch, patch, store, video_sampler


def reference_of(comfy, model, conds, latent, **kw):
    store_model, state = store(comfy, model)
    return state, ksampler(comfy, store_model, conds, latent, **kw)


def test_load_before_store(comfy, tiny_model, clip_latent):
    _, state = store(comfy, tiny_model)
    with pytest.raises(ValueError, match="Cross-Frame Attention Patch: the attention state from Store "
                                         "Reference Attention is empty.*Sample the reference"):
        patch(comfy, tiny_model, state, latent_from_batch(comfy, clip_latent, 0, 1))


def test_reference_resolution_differs_from_frames(comfy, tiny_model, conds, clip_latent):
    state, reference = reference_of(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 1),
                                    steps=2)
    small = {"samples": torch.randn(3, 4, 8, 8)}
    load_model = patch(comfy, tiny_model, state, reference)
    with pytest.raises(ValueError, match="Cross-Frame Attention Patch: the reference was sampled at 128x128 "
                                         ".*frames are 64x64.*same width and height"):
        ksampler(comfy, load_model, conds, small, steps=2)
    with pytest.raises(ValueError, match="Batch Video Sampler: the reference was sampled at 128x128"):
        video_sampler(comfy, tiny_model, conds, small, state=state, reference_latent=reference, steps=2)
    with pytest.raises(ValueError, match="Batch Video Sampler: the state comes from Store Reference "
                                         "Attention; also connect its reference sampler's LATENT"):
        video_sampler(comfy, tiny_model, conds, clip_latent, state=state, steps=2)
    with pytest.raises(ValueError, match="Cross-Frame Attention Patch: the reference was sampled at"):
        patch(comfy, tiny_model, state, {"samples": torch.zeros(1, 4, 8, 8)})


def test_state_from_another_model(comfy, tiny_model, conds, clip_latent):
    state, reference = reference_of(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 1),
                                    steps=2)
    other = tiny_model.clone()
    other.model = type(tiny_model.model)(tiny_model.model.model_config, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="filled by a different model"):
        patch(comfy, other, state, reference)
    del other
    gc.collect()


def test_state_whose_model_was_unloaded(comfy, tiny_model, conds, clip_latent):
    """The checkpoint that filled the state was evicted from ComfyUI's cache (the object is gone)."""
    doomed = tiny_model.clone()
    doomed.model = type(tiny_model.model)(tiny_model.model.model_config, device=torch.device("cpu"))
    doomed.model.load_state_dict(tiny_model.model.state_dict())
    state, reference = reference_of(comfy, doomed, conds, latent_from_batch(comfy, clip_latent, 0, 1), steps=2)
    del doomed
    comfy.model_management.cleanup_models_gc()
    gc.collect()
    with pytest.raises(ValueError, match="unloaded since.*Re-run the reference sampler"):
        patch(comfy, tiny_model, state, reference)


def test_schedule_without_usable_match(comfy, tiny_model, conds, clip_latent):
    state, reference = reference_of(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 1),
                                    steps=3, denoise=0.3)
    load_model = patch(comfy, tiny_model, state, reference)
    with pytest.raises(ValueError, match="no step usable at noise level.*same steps, scheduler and denoise"):
        ksampler(comfy, load_model, conds, latent_from_batch(comfy, clip_latent, 1, 2), steps=3, denoise=1.0)


def test_other_schedule_falls_back_to_nearest_sigma(comfy, tiny_model, conds, clip_latent, caplog):
    state, reference = reference_of(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 1),
                                    steps=6)
    load_model = patch(comfy, tiny_model, state, reference)
    with caplog.at_level(logging.WARNING, logger="CrossFrameAttention"):
        out = ksampler(comfy, load_model, conds, latent_from_batch(comfy, clip_latent, 1, 2), steps=4,
                       denoise=0.8)
    assert torch.isfinite(out["samples"]).all()
    assert state.first.steps.fallbacks > 0
    warnings = [r.message for r in caplog.records if "nearest recorded sigma" in r.message]
    assert len(warnings) == 1 and warnings[0].startswith("Cross-Frame Attention Patch: the reference")


def test_cfg_mismatch_between_reference_and_frames(comfy, tiny_model, conds, clip_latent):
    state, reference = reference_of(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 1),
                                    steps=2, cfg=1.0)
    load_model = patch(comfy, tiny_model, state, reference)
    with pytest.raises(ValueError, match="no negative \\(uncond\\) attention recorded.*same cfg"):
        ksampler(comfy, load_model, conds, latent_from_batch(comfy, clip_latent, 1, 2), steps=2, cfg=5.0)


def test_empty_latent_negative_chunk_and_multi_image_reference(comfy, tiny_model, conds, clip_latent):
    with pytest.raises(ValueError, match="Batch Video Sampler: latent_image is empty"):
        video_sampler(comfy, tiny_model, conds, {"samples": torch.zeros(0, 4, 16, 16)})
    with pytest.raises(ValueError, match="Batch Video Sampler: frames_per_batch is -1"):
        video_sampler(comfy, tiny_model, conds, clip_latent, frames_per_batch=-1)
    store_model, state = store(comfy, tiny_model)
    with pytest.raises(ValueError, match="Store Reference Attention: the reference latent holds 5 images; "
                                         "sample exactly one"):
        ksampler(comfy, store_model, conds, clip_latent, steps=1)
    assert not state.filled


def test_blocks_not_recorded_by_the_reference(comfy, tiny_model, conds, clip_latent):
    state, ref = reference_of(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 1), steps=2)
    with pytest.raises(ValueError, match="recorded blocks output, but input\\+output were asked for"):
        video_sampler(comfy, tiny_model, conds, clip_latent, state=state, reference_latent=ref,
                      blocks="input+output", steps=2)


def test_state_output_off_is_not_a_silent_no_op(comfy, tiny_model, conds, clip_latent):
    _, empty = video_sampler(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 2), steps=1)
    with pytest.raises(ValueError, match="Batch Video Sampler: the attention state from Batch Video Sampler "
                                         "is empty. Turn on output_state"):
        video_sampler(comfy, tiny_model, conds, clip_latent, state=empty, steps=1)


def test_models_without_patchable_self_attention_are_refused(comfy, tiny_model, conds, clip_latent):
    """A DiT (no U-Net blocks) would silently ignore attn1 patches: refuse it, naming the supported models."""
    check = sys.modules[comfy.Sampler.__module__.rsplit(".", 1)[0] + ".comfy_patch"]
    unet = sys.modules[comfy.Sampler.__module__.rsplit(".", 1)[0] + ".families.way_unet_attn1"]
    family = check.family_of(tiny_model.model)
    assert family.name == "SD U-Net"
    assert unet.self_attention_count(tiny_model.model.diffusion_model, family, frozenset({"output"})) == 4

    class DiTLike(torch.nn.Module):
        pass

    class FakeModel:
        diffusion_model = DiTLike()

    with pytest.raises(ValueError, match="Batch Video Sampler: this model's diffusion model is a DiTLike, which "
                                         "no model family of the pack covers.*Supported: SD1.x, SD2.x and SDXL.*"
                                         "Sample it without cross-frame attention"):
        check.check_supported(FakeModel(), frozenset({"output"}), "Batch Video Sampler")
    # U-Net words only for a U-Net: blocks that hold no attention of a U-Net that has some elsewhere.
    with pytest.raises(ValueError, match="Batch Video Sampler: blocks 'input' hold no self-attention of this "
                                         "U-Net \\(UNetLike\\).*Choose blocks that contain attention"):
        check.check_supported(_without_input_attention(tiny_model), frozenset({"input"}), "Batch Video Sampler")


def _without_input_attention(model):
    """A U-Net whose input blocks hold no transformer (an SDXL-like first level), sharing the tiny U-Net's
    output blocks (nothing copied, the session's model untouched)."""
    class UNetLike(torch.nn.Module):
        def __init__(self, output_blocks):
            super().__init__()
            self.input_blocks = torch.nn.ModuleList([torch.nn.Identity()])
            self.output_blocks = output_blocks

    class FakeModel:
        diffusion_model = UNetLike(model.model.diffusion_model.output_blocks)
    return FakeModel()


def _without_attention_patches(model):
    """A clone whose model calls drop every attn1 patch (standing in for a ComfyUI build whose blocks never
    call the patch, or a node that strips patches), through core's public U-Net function wrapper."""
    stripped = model.clone()

    def drop_patches(apply_model, args):
        c = dict(args["c"])
        options = dict(c.get("transformer_options", {}))
        options["patches"] = {k: v for k, v in options.get("patches", {}).items() if k != "attn1_patch"}
        c["transformer_options"] = options
        return apply_model(args["input"], args["timestep"], **c)
    stripped.set_model_unet_function_wrapper(drop_patches)
    return stripped


def test_a_run_that_never_reaches_the_patch_is_an_error(comfy, tiny_model, conds, clip_latent):
    """Not a silent no-op: sampling that never called the patch (so the clip is plain sampling) stops with
    an error naming the node, for the video sampler and for the Store reference alike."""
    stripped = _without_attention_patches(tiny_model)
    with pytest.raises(ValueError, match="Batch Video Sampler: sampling finished without any self-attention of "
                                         "the chosen blocks.*changed nothing on this SD U-Net model"):
        video_sampler(comfy, stripped, conds, clip_latent, steps=1)
    store_model, state = store(comfy, stripped)
    with pytest.raises(ValueError, match="Store Reference Attention: sampling finished without"):
        ksampler(comfy, store_model, conds, latent_from_batch(comfy, clip_latent, 0, 1), steps=1)
    assert not state.filled                      # nothing was published as a reference
    video_sampler(comfy, tiny_model, conds, clip_latent, steps=1)   # the unstripped model is fine


def test_option_errors_name_the_node(comfy, tiny_model, conds, clip_latent):
    with pytest.raises(ValueError, match="^Batch Video Sampler: start_percent=0.8 and end_percent=0.2"):
        video_sampler(comfy, tiny_model, conds, clip_latent, start_percent=0.8, end_percent=0.2, steps=1)
    state, reference = reference_of(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 1),
                                    steps=2)
    with pytest.raises(ValueError, match="^Cross-Frame Attention Patch: start_percent=0.9"):
        patch(comfy, tiny_model, state, reference, start_percent=0.9, end_percent=0.1)
    with pytest.raises(ValueError, match="^Store Reference Attention: blocks 'decoder' are not block kinds of this SD U-Net "
                                         "model. Choose auto, or output, input"):
        store(comfy, tiny_model, blocks="decoder")
    with pytest.raises(ValueError, match="^Batch Video Sampler: anchors='last'"):
        video_sampler(comfy, tiny_model, conds, clip_latent, anchors="last", steps=1)

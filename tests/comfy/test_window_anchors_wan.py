"""Cross-Window Anchors (nodes/cross_window_anchors.py, families/way_wan_windows.py) on tiny random Wan 2.1
models inside core's context windows (Context Windows (Manual), dim 2), fp32 on the CPU: window 0 is core's
windows unchanged (overlapping windows: in the first step only), later windows change (also with core's
FreeNoise), a clip's first windows do not depend on what follows (overlapping: in the first step only), one
window covering the clip is plain sampling, the clip does not depend on how ComfyUI cuts cond and uncond into calls, identical frames, I2V's two
cross-attention calls, VACE, chaining with another override and block replace, and the refusals."""
import inspect
import logging

import pytest
import torch

import wan_models
from graph_helpers import ksampler, rel_diff
from test_windows import core_windows

TOL = 1e-4
STEPS = 3
EFFECT = 1e-2   # measured: anchors move later windows by 2e-2..5e-2 of the output scale on random content


@pytest.fixture(scope="module")
def wan(comfy):
    return dict(model=wan_models.build(comfy), conds=wan_models.conditioning(), latent=wan_models.clip_latent(6))


def anchored(comfy, model, mode="first+previous", start=0.0, end=1.0):
    return comfy.mapping["CFA_CrossWindowAnchors"].execute(model, mode, start, end).args[0]


def windows(model, length, overlap=0, schedule="batched", causal=True):
    return core_windows(model, length, overlap, schedule, dim=2, causal_window_fix=causal)


def sample(comfy, model, conds, latent, steps=STEPS, noise=None):
    """KSampler's sampling, or comfy.sample.sample with the noise given (the same noise for two clip lengths)."""
    if noise is None:
        return ksampler(comfy, model, conds, latent, steps=steps)["samples"]
    import comfy.sample as cs
    return cs.sample(model, noise, steps, 5.0, "euler", "normal", conds[0], conds[1], latent["samples"],
                     denoise=1.0, seed=1)


@pytest.mark.parametrize("causal", [True, False])
def test_window_zero_is_core_windows_and_later_windows_change(comfy, wan, causal):
    plain = sample(comfy, windows(wan["model"], 2, causal=causal), wan["conds"], wan["latent"])
    out = sample(comfy, anchored(comfy, windows(wan["model"], 2, causal=causal)), wan["conds"], wan["latent"])
    assert rel_diff(out[:, :, :2], plain[:, :, :2]) <= TOL
    assert rel_diff(out[:, :, 2:], plain[:, :, 2:]) > EFFECT
    # the node's place relative to the windows node does not matter
    swapped = sample(comfy, windows(anchored(comfy, wan["model"]), 2, causal=causal), wan["conds"], wan["latent"])
    assert rel_diff(swapped, out) <= TOL
    # overlapping windows: in the first step, window 0's frames outside the overlap are core's; from the next
    # step on the overlap blends the anchored window 1 back into window 0's input, and window 0 changes too
    overlap = windows(wan["model"], 3, 1, "standard_static", causal)
    one = sample(comfy, anchored(comfy, overlap), wan["conds"], wan["latent"], steps=1)
    assert rel_diff(one[:, :, :2], sample(comfy, overlap, wan["conds"], wan["latent"], steps=1)[:, :, :2]) <= TOL
    more = sample(comfy, anchored(comfy, overlap), wan["conds"], wan["latent"])
    # measured 3.8e-4 / 6e-4 (ComfyUI 0.30.0, with / without causal_window_fix); round-off is about 1e-7
    assert rel_diff(more[:, :, :2], sample(comfy, overlap, wan["conds"], wan["latent"])[:, :, :2]) > 2 * TOL


def test_freenoise_window_zero_is_core_windows_and_later_windows_change(comfy, wan):
    """WAN Context Windows turns FreeNoise on by default on ComfyUI 0.30.0 (the wan_long_video example opens
    with it): core then fills each later window's new frames with a shuffle of earlier frames' noise before
    sampling. Window 0's noise is left as drawn, so window 0 is still core's windows without the pack, and
    later windows still get their anchors."""
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode
    if "freenoise" not in inspect.signature(ContextWindowsManualNode.execute).parameters:
        import comfyui_version
        pytest.skip(f"ComfyUI {comfyui_version.__version__}'s context windows have no FreeNoise option "
                    "(added in 0.30.0)")

    def free(model, on=True):
        return core_windows(model, 2, 0, "batched", dim=2, freenoise=on)

    plain = sample(comfy, free(wan["model"]), wan["conds"], wan["latent"])
    # FreeNoise acts here: later windows differ from core's windows without it
    assert rel_diff(plain[:, :, 2:], sample(comfy, free(wan["model"], False), wan["conds"],
                                            wan["latent"])[:, :, 2:]) > EFFECT
    out = sample(comfy, anchored(comfy, free(wan["model"])), wan["conds"], wan["latent"])
    assert rel_diff(out[:, :, :2], plain[:, :, :2]) <= TOL
    assert rel_diff(out[:, :, 2:], plain[:, :, 2:]) > EFFECT


@pytest.mark.parametrize("sampler", ["heun", "euler_ancestral"])
def test_samplers_that_evaluate_twice_per_step_or_draw_noise(comfy, wan, sampler):
    """heun evaluates the model twice per step (the second at the next step's sigma, which the next step
    evaluates again); ancestral samplers draw noise for the whole clip: windows still start at frame 0 at each
    evaluation, so window 0 stays core's and later windows get anchors."""
    model = windows(wan["model"], 2)
    plain = ksampler(comfy, model, wan["conds"], wan["latent"], steps=2, sampler_name=sampler)["samples"]
    out = ksampler(comfy, anchored(comfy, model), wan["conds"], wan["latent"], steps=2,
                   sampler_name=sampler)["samples"]
    assert rel_diff(out[:, :, :2], plain[:, :, :2]) <= TOL
    assert rel_diff(out[:, :, 2:], plain[:, :, 2:]) > EFFECT


def test_anchors_first_and_previous_and_the_percents_act(comfy, wan):
    model = windows(wan["model"], 2)
    plain = sample(comfy, model, wan["conds"], wan["latent"])
    outs = {mode: sample(comfy, anchored(comfy, model, mode), wan["conds"], wan["latent"])
            for mode in ("first+previous", "first", "previous")}
    for mode, out in outs.items():
        assert rel_diff(out[:, :, 2:], plain[:, :, 2:]) > EFFECT, mode
    assert rel_diff(outs["first"], outs["previous"]) > EFFECT
    never = sample(comfy, anchored(comfy, model, start=1.0, end=1.0), wan["conds"], wan["latent"])
    assert rel_diff(never, plain) <= TOL
    # 3 euler steps at sigma 1, 0.67, 0.33: start 0.3 (sigma 0.7) leaves out the first step
    late = sample(comfy, anchored(comfy, model, start=0.3, end=1.0), wan["conds"], wan["latent"])
    assert rel_diff(late, plain) > 1e-3 and rel_diff(late, outs["first+previous"]) > EFFECT


def test_one_window_covering_the_clip_is_plain_sampling(comfy, wan, caplog):
    plain = sample(comfy, wan["model"], wan["conds"], wan["latent"])
    one_window = sample(comfy, anchored(comfy, windows(wan["model"], 8)), wan["conds"], wan["latent"])
    assert rel_diff(one_window, plain) <= TOL
    with caplog.at_level(logging.WARNING):
        no_windows = anchored(comfy, wan["model"])
        assert rel_diff(sample(comfy, no_windows, wan["conds"], wan["latent"]), plain) <= TOL
        sample(comfy, no_windows, wan["conds"], wan["latent"], steps=1)
    warnings = [r for r in caplog.records if "sampled without context windows" in r.getMessage()]
    assert len(warnings) == 1   # once per node, not per run


def one_call_per_conditioning(model):
    """A clone whose model function calls apply_model once per conditioning (as ComfyUI does when memory is
    short), instead of cond and uncond in one batch; counts the calls."""
    calls = []

    def wrapper(apply_model, args):
        x, t, c, flags = args["input"], args["timestep"], args["c"], args["cond_or_uncond"]
        per = x.shape[0] // len(flags)
        outs = []
        for i, flag in enumerate(flags):
            rows = slice(i * per, (i + 1) * per)
            options = dict(c["transformer_options"], cond_or_uncond=[flag],
                           uuids=c["transformer_options"]["uuids"][i:i + 1])
            part = {k: (v[rows] if isinstance(v, torch.Tensor) and v.shape[0] == x.shape[0] else v)
                    for k, v in c.items() if k != "transformer_options"}
            calls.append(flag)
            outs.append(apply_model(x[rows], t[rows], transformer_options=options, **part))
        return torch.cat(outs)

    clone = model.clone()
    clone.set_model_unet_function_wrapper(wrapper)
    return clone, calls


def test_the_clip_does_not_depend_on_how_cond_and_uncond_are_cut_into_calls(comfy, wan):
    model = anchored(comfy, windows(wan["model"], 2))
    batched = sample(comfy, model, wan["conds"], wan["latent"])
    split_model, calls = one_call_per_conditioning(model)
    split = sample(comfy, split_model, wan["conds"], wan["latent"])
    assert set(calls) == {0, 1} and len(calls) == 2 * 3 * STEPS   # 2 conds x 3 windows x steps
    assert rel_diff(split, batched) <= TOL


def test_a_window_only_depends_on_the_windows_before_it(comfy, wan):
    """State is keyed by window and conditioning, never by counting calls: a 4-frame clip and a 6-frame clip
    with the same first 4 frames and noise share windows 0 and 1, and their frames come out the same."""
    noise = torch.randn(1, 16, 6, 8, 8, generator=torch.Generator().manual_seed(5))
    model = anchored(comfy, windows(wan["model"], 2))
    long = sample(comfy, model, wan["conds"], wan["latent"], noise=noise)
    short_latent = {"samples": wan["latent"]["samples"][:, :, :4]}
    short = sample(comfy, model, wan["conds"], short_latent, noise=noise[:, :, :4].contiguous())
    assert rel_diff(short, long[:, :, :4]) <= TOL


@pytest.mark.parametrize("causal", [True, False])
def test_overlapping_windows_feed_the_next_window_back_after_the_first_step(comfy, wan, causal):
    """docs/windows.md, both ways. Windows of 3 frames overlapping 1 (standard_static): a 3-frame clip is
    window 0 alone, a 5-frame clip with the same first 3 frames and noise adds window 2-4. Core blends the
    shared frame 2 from both windows after every step: in the first step frames 0-1 (no later window covers
    them) come out the same and frame 2 does not; from the next step on the blend is window 0's input, so
    window 0's own frames change with what follows (core's windows without the node do the same)."""
    latent = wan_models.clip_latent(5)
    noise = torch.randn(1, 16, 5, 8, 8, generator=torch.Generator().manual_seed(5))

    def first_three(model, steps):
        long = sample(comfy, model, wan["conds"], latent, steps=steps, noise=noise)
        short = sample(comfy, model, wan["conds"], {"samples": latent["samples"][:, :, :3]}, steps=steps,
                       noise=noise[:, :, :3].contiguous())
        return short, long[:, :, :3]

    overlap = windows(wan["model"], 3, 1, "standard_static", causal)
    for model in (anchored(comfy, overlap), overlap):
        short, long = first_three(model, steps=1)
        assert rel_diff(long[:, :, :2], short[:, :, :2]) <= TOL
        assert rel_diff(long[:, :, 2:], short[:, :, 2:]) > EFFECT
        short, long = first_three(model, steps=STEPS)
        # window 0's own frames: measured 5e-4..8e-4 of the output scale (0.30.0); round-off is about 1e-7
        assert rel_diff(long[:, :, :2], short[:, :, :2]) > 2 * TOL


@pytest.mark.thread_sensitive
def test_identical_frames(comfy, wan):
    """A clip of identical latent frames with identical noise in every frame. Anchors are appended keys, so
    the result stays exactly plain only where they duplicate the window's keys uniformly: windows of two
    latent frames without core's causal frame (keys [f0, f1, f0, f1]). Elsewhere an anchor duplicates one
    frame's keys (doubling its weight) or, under causal_window_fix, comes from a window of another length;
    measured on this model (3 steps): 3.0e-3 of the output scale with 3-frame windows (6.1e-2 for anchors on
    moving content) and 9.9e-3 with 2-frame windows and the causal frame (4.7e-2 on moving content). The test
    holds the deviation under a third of the effect on moving content."""
    static = wan_models.clip_latent(6, static=True)
    same_noise = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(3)).expand(1, 16, 6, 8, 8)
    same_noise = same_noise.contiguous()

    def deviation(latent, noise, length, causal):
        model = windows(wan["model"], length, causal=causal)
        return rel_diff(sample(comfy, anchored(comfy, model), wan["conds"], latent, noise=noise),
                        sample(comfy, model, wan["conds"], latent, noise=noise))

    assert deviation(static, same_noise, 2, causal=False) <= TOL
    for length, causal in ((3, False), (2, True)):
        moving = deviation(wan["latent"], None, length, causal)   # KSampler's noise: every frame its own
        still = deviation(static, same_noise, length, causal)
        assert 0 < still < moving / 3, (length, causal, still, moving)


@pytest.mark.parametrize("kind", ["i2v", "vace"])
def test_i2v_and_vace(comfy, kind):
    """I2V blocks call attention three times (self, image cross, text cross); VACE runs extra blocks outside
    the main blocks' replaces: only each main block's first call is anchored."""
    if kind == "vace" and not hasattr(comfy.model_base.WAN21_Vace, "resize_cond_for_context_window"):
        import comfyui_version
        pytest.skip(f"ComfyUI {comfyui_version.__version__}'s context windows do not cut VACE's vace_context per "
                    "window: core's windows fail on VACE without this pack too")
    model, conds = wan_models.build(comfy, kind), wan_models.conditioning(kind)
    latent = wan_models.clip_latent(6)
    seen = []

    def recording(func, *args, **kwargs):
        seen.append((args[0].shape[1], args[1].shape[1]))
        return func(*args, **kwargs)

    plain = sample(comfy, windows(model, 2), conds, latent, steps=2)
    inner = model.clone()
    inner.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = recording
    out = sample(comfy, anchored(comfy, windows(inner, 2)), conds, latent, steps=2)
    assert rel_diff(out[:, :, :2], plain[:, :, :2]) <= TOL
    assert rel_diff(out[:, :, 2:], plain[:, :, 2:]) > EFFECT
    frame = 16
    extended = [k - q for q, k in seen if k > q]
    assert set(extended) == {2 * frame}                    # later windows' self-attention: two anchor frames
    assert len(extended) == 2 * 2 * 2                      # 2 later windows x 2 main blocks x 2 steps, no more
    cross = {k for q, k in seen if k < q}
    assert cross == ({8, wan_models.CLIP_TOKENS} if kind == "i2v" else {8})   # cross attention untouched


def test_an_earlier_override_and_block_replace_keep_working(comfy, wan):
    seen, replaced = [], []

    def other_override(func, *args, **kwargs):
        seen.append(args[1].shape[1] - args[0].shape[1])
        return func(*args, **kwargs)

    def other_replace(args, extra):
        replaced.append(1)
        return extra["original_block"](args)

    model = wan["model"].clone()
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = other_override
    model.set_model_patch_replace(other_replace, "dit", "double_block", 1)
    out = sample(comfy, anchored(comfy, windows(model, 2)), wan["conds"], wan["latent"])
    reference = sample(comfy, anchored(comfy, windows(wan["model"], 2)), wan["conds"], wan["latent"])
    assert rel_diff(out, reference) <= TOL
    assert replaced and 2 * 16 in seen


def test_refusals(comfy, wan, tiny_model):
    Node = comfy.mapping["CFA_CrossWindowAnchors"]
    with pytest.raises(ValueError, match="Cross-Window Anchors: the model is a UNetModel \\(BaseModel\\); "
                                         "cross-window anchors serve Wan 2.1 / 2.2"):
        Node.execute(tiny_model, "first+previous", 0.0, 1.0)
    with pytest.raises(ValueError, match="already carries cross-window anchors"):
        Node.execute(anchored(comfy, wan["model"]), "first", 0.0, 1.0)
    with pytest.raises(ValueError, match="start_percent=0.6 and end_percent=0.2"):
        Node.execute(wan["model"], "first", 0.6, 0.2)
    for schedule in ("looped_uniform", "standard_uniform"):
        with pytest.raises(ValueError, match=f"Cross-Window Anchors: the model's context windows use the "
                                             f"'{schedule}' schedule.*'batched' or 'standard_static'"):
            sample(comfy, anchored(comfy, windows(wan["model"], 2, 1, schedule)), wan["conds"], wan["latent"],
                   steps=1)
    with pytest.raises(ValueError, match="Cross-Window Anchors: the model's context windows split dimension 0"):
        sample(comfy, anchored(comfy, core_windows(wan["model"], 2, dim=0)), wan["conds"], wan["latent"], steps=1)

    def replacing_override(func, *args, **kwargs):
        return func(*args, **kwargs)

    later = anchored(comfy, windows(wan["model"], 2)).clone()
    later.model_options["transformer_options"]["optimized_attention_override"] = replacing_override
    with pytest.raises(ValueError, match="Cross-Window Anchors: no Wan block's self-attention reached "
                                         "cross-window anchors.*replacing_override.*Put Cross-Window Anchors after"):
        sample(comfy, later, wan["conds"], wan["latent"], steps=1)

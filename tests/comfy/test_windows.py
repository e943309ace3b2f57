"""One sampler pass, each model evaluation in windows of frames (ours, or the user's Context Windows (Manual)):
the same clip for every sampler and window size, the rule for overlapping windows, refusals, ControlNet hints
per window, interruption between windows, the window size chosen from free memory, keyframe anchors."""
import inspect
import logging

import pytest
import torch

from graph_helpers import ksampler, latent_from_batch, patch, rel_diff, store, video_sampler, with_hints

TOL = 1e-4
SAMPLERS = ["euler", "heun", "dpmpp_2m", "euler_ancestral", "dpmpp_sde"]
# ComfyUI 0.3.64's context-window handler can only step an image batch of 1 or steps + 1 images (its step
# lookup compares every image's sigma with the schedule; 0.30 compares one): with core's windows, the 5-frame
# clip is sampled in 4 steps.
CORE_STEPS = 4


def _old_core() -> bool:
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode
    return "causal_window_fix" not in inspect.signature(ContextWindowsManualNode.execute).parameters


def core_windows(model, length, overlap=0, schedule="batched", fuse="pyramid", **extra):
    """Core's "Context Windows (Manual)" node on `model` (its inputs differ between versions)."""
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode
    kw = dict(model=model, context_length=length, context_overlap=overlap, context_schedule=schedule,
              context_stride=1, closed_loop=False, fuse_method=fuse, dim=extra.pop("dim", 0))
    params = inspect.signature(ContextWindowsManualNode.execute).parameters
    if "freenoise" in params:
        kw["freenoise"] = False
    kw.update({k: v for k, v in extra.items() if k in params})
    return ContextWindowsManualNode.execute(**kw).args[0]


def batch_sizes(model):
    """A clone whose self-attention calls record their batch sizes (an attn1 patch upstream of ours)."""
    sizes = []

    def record(n, context, value, extra_options):
        sizes.append(n.shape[0])
        return n, context, value
    m = model.clone()
    m.set_model_attn1_patch(record)
    return m, sizes


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_gives_the_same_clip_for_any_window_size(comfy, tiny_model, conds, clip_latent, sampler):
    kw = dict(sampler_name=sampler, steps=CORE_STEPS)
    whole, _ = video_sampler(comfy, tiny_model, conds, clip_latent, **kw)
    for size in (1, 2, 3):
        model, sizes = batch_sizes(tiny_model)
        windowed, _ = video_sampler(comfy, model, conds, clip_latent, frames_per_batch=size, **kw)
        assert max(sizes) <= 2 * size                        # cond+uncond of one window at most
        assert rel_diff(windowed, whole) <= TOL, f"windows of {size}"
    model, sizes = batch_sizes(core_windows(tiny_model, 2))
    if sampler == "dpmpp_sde" and _old_core():   # 0.3.64's handler cannot step a sigma between two steps
        with pytest.raises(ValueError, match="Batch Video Sampler: this ComfyUI's Context Windows \\(Manual\\) "
                                             "cannot evaluate the model at sigma .* between two steps"):
            video_sampler(comfy, model, conds, clip_latent, **kw)
    else:
        windowed, _ = video_sampler(comfy, model, conds, clip_latent, **kw)
        assert max(sizes) <= 2 * 2 + 2 and rel_diff(windowed, whole) <= TOL   # (+1 frame each: causal fix)
    plain = ksampler(comfy, tiny_model, conds, clip_latent, **kw)
    assert rel_diff(whole["samples"][1:], plain["samples"][1:]) > 1e-2


@pytest.mark.parametrize("causal_fix", [True, False])
def test_overlapping_windows_follow_the_rule(comfy, tiny_model, conds, clip_latent, causal_fix):
    """The rule: a window's frames attend to frame 0 and their previous frame as evaluated earlier in the
    same model evaluation (the same window first, else the latest earlier window). The method is causal
    (frame i depends on frames 0..i only), so every window's frames come out as in the whole clip and the
    fused overlaps average equal values: overlapping static windows give the whole clip."""
    whole, _ = video_sampler(comfy, tiny_model, conds, clip_latent, steps=CORE_STEPS)
    windows = core_windows(tiny_model, 3, overlap=1, schedule="standard_static", causal_window_fix=causal_fix)
    fused, _ = video_sampler(comfy, windows, conds, clip_latent, steps=CORE_STEPS)
    assert rel_diff(fused, whole) <= TOL
    # Core's windows without our patch fuse plain-attention windows: the method is what makes them agree.
    plain_fused = ksampler(comfy, windows, conds, clip_latent, steps=CORE_STEPS)
    assert rel_diff(plain_fused["samples"][1:], whole["samples"][1:]) > 1e-2


def test_out_of_order_schedules_other_dims_and_double_windows_are_refused(comfy, tiny_model, conds,
                                                                           clip_latent):
    for schedule in ("looped_uniform", "standard_uniform"):
        with pytest.raises(ValueError, match=f"Batch Video Sampler: the model's context windows use the "
                                             f"'{schedule}' schedule.*set context_schedule to 'batched' or "
                                             "'standard_static'"):
            video_sampler(comfy, core_windows(tiny_model, 2, 1, schedule), conds, clip_latent, steps=1)
    with pytest.raises(ValueError, match="Batch Video Sampler: the model's context windows split dimension 1"):
        video_sampler(comfy, core_windows(tiny_model, 2, dim=1), conds, clip_latent, steps=1)
    with pytest.raises(ValueError, match="Batch Video Sampler: the model already has context windows.*"
                                         "frames_per_batch is 2"):
        video_sampler(comfy, core_windows(tiny_model, 2), conds, clip_latent, steps=1, frames_per_batch=2)
    store_model, state = store(comfy, tiny_model)
    reference = ksampler(comfy, store_model, conds, latent_from_batch(comfy, clip_latent, 0, 1), steps=1)
    looped = core_windows(patch(comfy, tiny_model, state, reference), 2, 1, "looped_uniform")
    with pytest.raises(ValueError, match="Cross-Frame Attention Patch: the model's context windows use the "
                                         "'looped_uniform' schedule"):
        ksampler(comfy, looped, conds, latent_from_batch(comfy, clip_latent, 1, 4), steps=1)
    if _old_core():   # 0.3.64: its step lookup fails for 5 images in 2 steps; a clear error instead
        with pytest.raises(ValueError, match="Batch Video Sampler: this ComfyUI's Context Windows \\(Manual\\) "
                                             "cannot sample a batch of 5 images with 2 steps"):
            video_sampler(comfy, core_windows(tiny_model, 2), conds, clip_latent, steps=2)


def test_manual_store_patch_graph_with_core_windows_equals_batch_video_sampler(comfy, tiny_model, conds,
                                                                               clip_latent):
    whole, _ = video_sampler(comfy, tiny_model, conds, clip_latent, steps=3)   # 4 frames below: 3 steps
    store_model, state = store(comfy, tiny_model)
    reference = ksampler(comfy, store_model, conds, latent_from_batch(comfy, clip_latent, 0, 1), steps=3)
    for schedule, overlap in (("batched", 0), ("standard_static", 1)):
        model = core_windows(patch(comfy, tiny_model, state, reference), 2, overlap, schedule)
        model, sizes = batch_sizes(model)
        rest = ksampler(comfy, model, conds, latent_from_batch(comfy, clip_latent, 1, 4), steps=3)
        assert max(sizes) <= 2 * 3                            # windows, not the 4 frames at once
        assert rel_diff(rest["samples"], whole["samples"][1:]) <= TOL, schedule


@pytest.mark.parametrize("windows", ["ours", "core batched", "core overlapping"])
def test_controlnet_hints_follow_their_frames_in_every_window(comfy, tiny_model, conds, clip_latent,
                                                              recording_control, windows):
    log = []
    hints = torch.arange(5, dtype=torch.float32)[:, None, None, None].expand(5, 3, 8, 8).contiguous()
    first = recording_control(log, "first")
    first.set_cond_hint(hints)
    second = recording_control(log, "second")   # a chained ControlNet (previous_controlnet link)
    second.set_cond_hint(hints + 10)
    second.set_previous_controlnet(first)
    pos, neg = with_hints(conds[0], second), with_hints(conds[1], second)
    model, kw = tiny_model, {}
    if windows == "ours":
        kw["frames_per_batch"] = 2
    elif windows == "core batched":
        model = core_windows(tiny_model, 2)
    else:
        model = core_windows(tiny_model, 3, 1, "standard_static", causal_window_fix=False)
    model, sizes = batch_sizes(model)
    video_sampler(comfy, model, (pos, neg), clip_latent, steps=1 if windows == "ours" else CORE_STEPS, **kw)
    seen = {name: sorted(set(ids for n, ids in log if n == name)) for name in ("first", "second")}
    want = {"ours": [(0, 1), (2, 3), (4,)], "core batched": None, "core overlapping": [(0, 1, 2), (2, 3, 4)]}
    if windows == "core batched":   # 0.30's causal fix puts the frame before a window first
        assert seen["first"] in ([(0, 1), (2, 3), (4,)], [(0, 1), (1, 2, 3), (3, 4)])
    else:
        assert seen["first"] == want[windows]
    assert seen["second"] == [tuple(v + 10 for v in ids) for ids in seen["first"]]
    assert hints.shape[0] == 5 and first.cond_hint_original.shape[0] == 5   # the user's objects untouched


def test_interrupt_between_windows_then_a_clean_rerun(comfy, tiny_model, conds, clip_latent):
    mm = comfy.model_management
    expected, _ = video_sampler(comfy, tiny_model, conds, clip_latent, frames_per_batch=2, steps=2)
    model, sizes = batch_sizes(tiny_model)
    calls = []

    def cancel_after_first_window(n, context, value, extra_options):
        calls.append(extra_options["context_window"].index_list[0])
        mm.interrupt_current_processing(True)          # a user presses Cancel during window 0
        return n, context, value
    model.set_model_attn1_patch(cancel_after_first_window)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            video_sampler(comfy, model, conds, clip_latent, frames_per_batch=2, steps=2)
    finally:
        mm.interrupt_current_processing(False)
    assert set(calls) == {0}                            # stopped before window 1 of the first evaluation
    again, _ = video_sampler(comfy, tiny_model, conds, clip_latent, frames_per_batch=2, steps=2)
    assert torch.equal(again["samples"], expected["samples"])


def test_window_size_is_chosen_from_free_memory(comfy, tiny_model, conds, clip_latent, monkeypatch, caplog):
    mm = comfy.model_management
    whole, _ = video_sampler(comfy, tiny_model, conds, clip_latent, steps=2)
    need = tiny_model.model.memory_required([4] + list(clip_latent["samples"].shape[1:])) * 1.5
    # Free memory for the weights still to load, the inference reserve and a window of 2 frames (cond +
    # uncond), not 3.
    pending = max(0, tiny_model.model_size() - tiny_model.loaded_size())
    free = mm.minimum_inference_memory() + pending + need * 1.2
    monkeypatch.setattr(mm, "get_free_memory",
                        lambda dev=None, torch_free_too=False: (free, free) if torch_free_too else free)
    model, sizes = batch_sizes(tiny_model)
    with caplog.at_level(logging.INFO):
        windowed, _ = video_sampler(comfy, model, conds, clip_latent, steps=2)
    assert "Batch Video Sampler: 5 frames in windows of 2 (auto:" in caplog.text
    assert max(sizes) == 4 and rel_diff(windowed, whole) <= TOL
    monkeypatch.undo()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        video_sampler(comfy, tiny_model, conds, clip_latent, steps=1)
    assert "Batch Video Sampler: 5 frames in one batch (auto:" in caplog.text


def test_keyframe_anchors_are_window_exact_and_change_the_clip(comfy, tiny_model, conds, clip_latent):
    keyed, _ = video_sampler(comfy, tiny_model, conds, clip_latent, steps=3, anchor_every=2)
    for size in (1, 3):
        windowed, _ = video_sampler(comfy, tiny_model, conds, clip_latent, steps=3, anchor_every=2,
                                    frames_per_batch=size)
        assert rel_diff(windowed, keyed) <= TOL
    anchored_on_0, _ = video_sampler(comfy, tiny_model, conds, clip_latent, steps=3)
    assert rel_diff(keyed["samples"][:2], anchored_on_0["samples"][:2]) <= TOL   # before the first keyframe
    assert rel_diff(keyed["samples"][2:], anchored_on_0["samples"][2:]) > 1e-2


def test_per_frame_conditioning_follows_its_window(comfy):
    """Per-frame entries of the sampler's conditioning (masks, model conds, one per clip frame) are cut to
    the window; entries shared by all frames pass through untouched."""
    import sys
    from comfy.conds import CONDCrossAttn, CONDNoiseShape
    windows = sys.modules[comfy.Sampler.__module__.rsplit(".", 1)[0] + ".windows"]
    per_frame = torch.arange(5.0)[:, None, None, None].expand(5, 4, 8, 8)
    cond = [{"mask": per_frame[:, 0], "strength": 0.7,
             "model_conds": {"c_concat": CONDNoiseShape(per_frame),
                             "c_crossattn": CONDCrossAttn(torch.zeros(1, 8, 32))}}]
    cut = windows.WindowConditioning("Batch Video Sampler").cut(cond, 5, 2, 4, None)
    assert cut[0]["mask"][:, 0, 0].tolist() == [2.0, 3.0]
    assert cut[0]["model_conds"]["c_concat"].cond[:, 0, 0, 0].tolist() == [2.0, 3.0]
    assert cut[0]["model_conds"]["c_crossattn"] is cond[0]["model_conds"]["c_crossattn"]
    assert cut[0]["strength"] == 0.7 and cond[0]["mask"].shape[0] == 5   # the sampler's conds untouched

import copy

import pytest
import torch

from cross_frame_attention import (AttentionBank, CrossFrameError, CrossFrameOptions, CrossFrameState, FrameRun,
                                   RunPlan, RunPlanner, window_bounds)

import toy_unet as toy
from toy_unet import group_of

LAYOUTS = [[0, 1], [1, 0], [0], [0, 0, 1]]


def kv_of(plan, layout):
    return FrameRun(plan, group_of(layout)).kv


def in_runs(x, frames_per_run, denoise_run, state=None):
    """The clip in sampling runs of `frames_per_run` frames, each continuing the state the one before kept
    (what a chain of Batch Video Samplers with output_state does): denoise_run(index, frames, plan) -> output.
    Returns (output, the last run's state)."""
    outs = []
    for i, (s, e) in enumerate(window_bounds(x.shape[0], frames_per_run)):
        planner = RunPlanner(CrossFrameOptions(), e - s, "test", state=state, keep_state=True)
        outs.append(denoise_run(i, x[s:e], planner.plan()))
        state = planner.result_state()
    return torch.cat(outs), state


class NoSync:
    """A sigma that fails if anything reads its value (a device sync on a real GPU)."""

    def reshape(self, *a):
        raise AssertionError("sigma was read on the fast path")

    def __float__(self):
        raise AssertionError("sigma was read on the fast path")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_in_batch_kv_per_cond_layout(layout):
    """Each cond group is its own clip: frame f of group g sees [frame 0 of g; frame f-1 of g]."""
    frames, t, c = 4, 5, 3
    x = torch.arange(len(layout) * frames, dtype=torch.float32)[:, None, None].expand(-1, t, c).contiguous()
    run = FrameRun(RunPlan(frames=frames, options=CrossFrameOptions()))
    kv = run.kv("L", x, layout, NoSync())
    for g in range(len(layout)):
        for f in range(frames):
            row = kv[g * frames + f]
            assert torch.all(row[:t] == g * frames)                        # first frame of its own group
            assert torch.all(row[t:] == g * frames + max(f - 1, 0))        # previous (frame 0: itself)


def test_store_then_load_keeps_cond_and_uncond_apart_in_split_calls():
    frames, t, c = 3, 4, 2
    ref = AttentionBank("ref")
    store = FrameRun(RunPlan(frames=1, options=CrossFrameOptions(), store=ref))
    cond_ref, uncond_ref = torch.full((1, t, c), 1.0), torch.full((1, t, c), -1.0)
    assert store.kv("L", torch.cat([uncond_ref, cond_ref]), [1, 0], torch.tensor([5.0])) is None
    load = FrameRun(RunPlan(frames=frames, options=CrossFrameOptions(), first=ref))
    x = torch.randn(frames, t, c)
    for flag, value in ((0, 1.0), (1, -1.0)):          # one call per group, in either order
        kv = load.kv("L", x, [flag], torch.tensor([5.0] * frames))
        assert torch.all(kv[:, :t] == value)            # the matching group's reference
        assert torch.all(kv[0, t:] == value)            # batch frame 0: [reference; reference]
        assert torch.equal(kv[1:, t:], x[:-1])


def test_load_without_uncond_recorded_names_the_fix():
    ref = AttentionBank("the reference")
    FrameRun(RunPlan(frames=1, options=CrossFrameOptions(), store=ref)).kv("L", torch.zeros(1, 4, 2), [0], 1.0)
    load = FrameRun(RunPlan(frames=2, options=CrossFrameOptions(), first=ref, who="Patch"))
    with pytest.raises(CrossFrameError, match="no negative .*same cfg"):
        load.kv("L", torch.zeros(4, 4, 2), [1, 0], 1.0)
    with pytest.raises(CrossFrameError, match="other\\s+blocks|for other blocks|other blocks"):
        load.kv("other-layer", torch.zeros(2, 4, 2), [0], 1.0)
    with pytest.raises(CrossFrameError, match="another resolution.*same width and height"):
        load.kv("L", torch.zeros(2, 9, 2), [0], 1.0)


def test_batch_not_matching_the_planned_frames_is_an_error():
    run = FrameRun(RunPlan(frames=3, options=CrossFrameOptions(), who="Batch Video Sampler"))
    with pytest.raises(CrossFrameError, match="Batch Video Sampler.*holds 4 images.*3 frame"):
        run.kv("L", torch.zeros(4, 2, 2), [0], 1.0)
    with pytest.raises(CrossFrameError, match="empty"):
        FrameRun(RunPlan(frames=0, options=CrossFrameOptions()))


def test_active_range_leaves_other_steps_plain():
    run = FrameRun(RunPlan(frames=2, options=CrossFrameOptions(), active_sigmas=(8.0, 3.0)))
    x = torch.randn(2, 3, 2)
    assert run.kv("L", x, [0], torch.tensor([10.0, 10.0])) is None
    assert run.kv("L", x, [0], torch.tensor([5.0, 5.0])) is not None
    assert run.kv("L", x, [0], torch.tensor([1.0, 1.0])) is None


def test_state_survives_deepcopy_and_bank_memory_is_counted():
    state = CrossFrameState(frozenset({"output"}), "Store")
    assert copy.deepcopy(state) is state and copy.copy(state) is state
    assert copy.deepcopy({"patch": [state]})["patch"][0] is state
    bank = AttentionBank("ref", device=torch.device("cpu"), dtype=torch.float16)
    for step in (3.0, 2.0, 1.0):
        for layer in range(4):
            for group in ((0, 0), (1, 0)):
                bank.record(layer, group, step, torch.randn(64, 32))
    assert len(bank) == 3 * 4 * 2
    assert bank.nbytes() == 3 * 4 * 2 * 64 * 32 * 2   # float16 storage as asked
    assert all(t.dtype == torch.float16 for t in bank._entries.values())


def test_recorded_tokens_are_copies_not_views_of_the_batch():
    bank = AttentionBank("ref")
    x = torch.randn(3, 4, 2)
    FrameRun(RunPlan(frames=3, options=CrossFrameOptions(), record_last=bank)).kv("L", x, [0], 1.0)
    kept = bank.fetch("L", [(0, 0)], [0], 0, x, "test")[0]
    x.zero_()
    assert kept.abs().sum() > 0


@pytest.mark.thread_sensitive
@pytest.mark.parametrize("layout,kw", [([1, 0], {}), ([0], {}), ([1, 0], dict(heun=True)),
                                       ([0, 0, 1], dict(split_calls=True)), ([0, 0, 1], {})])
@pytest.mark.parametrize("frames_per_run", [1, 2, 3, 0])
def test_continued_runs_and_batched_equal_frame_by_frame(layout, kw, frames_per_run):
    """Sequential equals batched, across sampling runs: a clip sampled in several runs, each continuing the
    kept state (anchor and last frame recorded per step) of the one before, equals the clip in one batch and
    frame by frame; also when a sigma is evaluated twice (heun) and when two positive conds arrive in
    separate calls (area conds of different sizes)."""
    weights = toy.make_weights()
    x = torch.randn(5, toy.TOKENS, toy.CHANNELS, generator=torch.Generator().manual_seed(3))
    want = toy.frame_by_frame(x, weights, layout, **kw)
    got, _ = in_runs(x, frames_per_run, lambda i, xs, plan: toy.denoise(xs, weights, layout, kv_of(plan, layout),
                                                                        **kw))
    plain = toy.denoise(x, weights, layout, lambda *a: None, **kw)
    assert (got - want).abs().max() < 1e-5
    assert (plain - want).abs().max() > 1e-2     # the method really acts


@pytest.mark.parametrize("with_ids", [True, False])
def test_conditioning_ids_keep_conds_apart_when_batching_changes(with_ids):
    """ComfyUI batches conds together or calls them one by one depending on free memory and area sizes,
    so one run may see [0, 0, 1] in one call and the next in three. Conditioning ids keep each cond's
    key stable; keyed by order within a call alone, the second positive cond reads the wrong frame."""
    weights = toy.make_weights()
    x = torch.randn(4, toy.TOKENS, toy.CHANNELS, generator=torch.Generator().manual_seed(8))
    layout = [0, 0, 1]
    want = toy.frame_by_frame(x, weights, layout)

    def run(i, xs, plan):
        kv = FrameRun(plan, group_of(layout) if with_ids else None).kv
        return toy.denoise(xs, weights, layout, kv, split_calls=(i == 0))
    try:
        error = float((in_runs(x, 2, run)[0] - want).abs().max())
    except CrossFrameError:   # the second positive cond found nothing under its key
        error = float("inf")
    assert (error < 1e-5) if with_ids else (error > 1e-3)


@pytest.mark.thread_sensitive
def test_split_cond_calls_equal_one_call():
    weights = toy.make_weights()
    x = torch.randn(4, toy.TOKENS, toy.CHANNELS, generator=torch.Generator().manual_seed(4))
    one = toy.denoise(x, weights, [1, 0], kv_of(RunPlan(frames=4, options=CrossFrameOptions()), [1, 0]))
    split = toy.denoise(x, weights, [1, 0], kv_of(RunPlan(frames=4, options=CrossFrameOptions()), [1, 0]),
                        split_calls=True)
    assert (one - split).abs().max() < 1e-5


def test_reference_state_and_continuation():
    """A stored reference anchors the clip; a kept clip state continues it as if never split."""
    weights = toy.make_weights()
    gen = torch.Generator().manual_seed(5)
    ref_x = torch.randn(1, toy.TOKENS, toy.CHANNELS, generator=gen)
    x = torch.randn(6, toy.TOKENS, toy.CHANNELS, generator=gen)
    layout = [1, 0]
    # STORE through the core
    bank = AttentionBank("ref")
    toy.denoise(ref_x, weights, layout, kv_of(RunPlan(frames=1, options=CrossFrameOptions(), store=bank),
                                              layout))
    state = CrossFrameState(frozenset({"output"}), "Store")
    state.first = bank
    want = toy.frame_by_frame(x, weights, layout, reference=toy.record_reference(ref_x, weights, layout))
    # whole clip against the reference
    planner = RunPlanner(CrossFrameOptions(), 6, "test", state=state)
    got = toy.denoise(x, weights, layout, kv_of(planner.plan(), layout))
    assert (got - want).abs().max() < 1e-5
    # the clip in two sampler runs of 3, each run in windows of 2, the second continuing the first's state
    outs = []
    for s, e in ((0, 3), (3, 6)):
        planner = RunPlanner(CrossFrameOptions(), 3, "test", state=state, keep_state=True)
        outs.append(toy.windowed(FrameRun(planner.plan(), group_of(layout)), 2)(x[s:e], weights, layout))
        state = planner.result_state()
        assert state.filled and state.last is not None
    assert (torch.cat(outs) - want).abs().max() < 1e-5


def test_planner_records_only_what_a_continuation_reads():
    one = RunPlanner(CrossFrameOptions(), 4, "x").plan()
    assert (one.first, one.prev, one.record_first, one.record_last) == (None, None, None, None)
    kept = RunPlanner(CrossFrameOptions(), 4, "x", keep_state=True)
    plan = kept.plan()
    assert plan.record_first_frame == 0 and plan.record_first is not None and plan.record_last is not None
    assert "frame 3 of the clip (x)" == plan.record_last.label
    assert kept.plan().record_last is not plan.record_last              # a re-run records afresh
    state = CrossFrameState(frozenset({"output"}), "Store")
    state.first = AttentionBank("ref")
    on_reference = RunPlanner(CrossFrameOptions(), 4, "x", state=state, keep_state=True).plan()
    assert on_reference.first is state.first and on_reference.record_first is None  # the reference anchors
    keyed = RunPlanner(CrossFrameOptions(anchor_every=3), 8, "x", state=state, keep_state=True).plan()
    assert keyed.record_first_frame == 6 and keyed.record_first is not None         # the latest keyframe
    cpu = RunPlanner(CrossFrameOptions(bank_device="cpu", bank_dtype="float16"), 2, "x", keep_state=True,
                     latent_shape=(4, 8, 8)).plan().record_last
    assert (cpu.device, cpu.dtype, cpu.latent_shape) == (torch.device("cpu"), torch.float16, (4, 8, 8))


def test_planner_errors():
    with pytest.raises(CrossFrameError, match="empty"):
        RunPlanner(CrossFrameOptions(), 0, "Batch Video Sampler")
    empty = RunPlanner(CrossFrameOptions(), 4, "Batch Video Sampler").result_state()
    with pytest.raises(CrossFrameError, match="output_state"):
        empty.check_usable("Cross-Frame Attention Patch")
    with pytest.raises(CrossFrameError, match="before the clip was sampled"):
        RunPlanner(CrossFrameOptions(), 4, "x", keep_state=True).result_state()


def test_options_validation():
    assert CrossFrameOptions(blocks="input+output").blocks == {"input", "output"}
    for bad in (dict(blocks="decoder[x]"), dict(anchors="last"), dict(start_percent=0.8, end_percent=0.2),
                dict(bank_device="gpu"), dict(bank_dtype="int8")):
        with pytest.raises(CrossFrameError, match="^Batch Video Sampler: "):
            CrossFrameOptions(**bad, who="Batch Video Sampler")

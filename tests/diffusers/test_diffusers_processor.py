"""The diffusers attention processor on its own: layer selection by name (SD1.x and SDXL shapes), plain attention
when no run is set, survival of deepcopy, and one U-Net call on an SDXL-shaped U-Net equal to the frame-by-frame
reference."""
from __future__ import annotations

import copy

import pytest

import needs_diffusers  # noqa: F401  (first: skips this module without the diffusers extra)
import torch  # noqa: E402

import cfa_diffusers_tiny as tiny  # noqa: E402

from cross_frame_attention import CrossFrameError, CrossFrameOptions, FrameRun, RunPlan  # noqa: E402
from cross_frame_diffusers.processor import (CrossFrameAttnProcessor, CrossFrameContext,  # noqa: E402
                                             StepHook, block_group, install_processors,
                                             restore_processors, select_layers)

TOL = 1e-4
FRAMES = 3


def test_block_groups_by_name():
    assert block_group("up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor") == "output"
    assert block_group("down_blocks.2.attentions.1.transformer_blocks.9.attn1.processor") == "input"
    assert block_group("mid_block.attentions.0.transformer_blocks.3.attn1.processor") == "middle"
    assert block_group("up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor") is None
    assert block_group("down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.processor") is None
    assert block_group("controlnet_down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor") is None


@pytest.mark.parametrize("make_unet,counts", [
    (tiny.tiny_unet, {"input": 2, "middle": 1, "output": 4}),
    # SDXL shape: no attention in the outer level, two transformer blocks per attention
    (tiny.tiny_sdxl_unet, {"input": 2, "middle": 2, "output": 4}),
], ids=["sd15-shaped", "sdxl-shaped"])
def test_select_layers_by_pattern(make_unet, counts):
    names = list(make_unet().attn_processors)
    for group, count in counts.items():
        chosen = select_layers(names, {group})
        assert len(chosen) == count and all(".attn1." in n for n in chosen)
    assert len(select_layers(names, {"input", "middle", "output"})) == sum(counts.values())
    with pytest.raises(CrossFrameError):
        select_layers(names, {"decoder"})


def test_no_layers_in_the_chosen_blocks_is_an_error():
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                mid_block_type=None)
    with pytest.raises(CrossFrameError, match="no spatial self-attention layers in blocks middle"):
        install_processors(unet, CrossFrameContext(), {"middle"})


def _sdxl_inputs(frames, groups, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, 4, 16, 16, generator=g)
    text = torch.randn(groups, 6, tiny.TEXT_DIM, generator=g)
    pooled = torch.randn(groups, tiny.TEXT_DIM, generator=g)
    time_ids = torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]).repeat(groups, 1)
    return x, text, pooled, time_ids


def _call(unet, x, text, pooled, time_ids, t=torch.tensor(400)):
    """One CFG-batched U-Net call on frames x: [uncond frames; cond frames] as diffusers batches it."""
    f, groups = x.shape[0], text.shape[0]
    rows = lambda a: a.repeat_interleave(f, dim=0)  # noqa: E731
    return unet(x.repeat(groups, 1, 1, 1), t, encoder_hidden_states=rows(text),
                added_cond_kwargs={"text_embeds": rows(pooled), "time_ids": rows(time_ids)}).sample


def test_plain_attention_when_no_run_is_set():
    unet = tiny.tiny_sdxl_unet()
    inputs = _sdxl_inputs(FRAMES, 2)
    with torch.no_grad():
        plain = _call(unet, *inputs)
        previous = install_processors(unet, CrossFrameContext(), {"input", "middle", "output"})
        ours = _call(unet, *inputs)
        restore_processors(unet, previous)
    assert tiny.rel_diff(ours, plain) <= TOL


def test_sdxl_shaped_call_equals_frame_by_frame():
    """One U-Net call over 3 frames with CFG, all blocks: in-batch cross-frame equals the reference processors
    run on one frame at a time; identical frames give the plain U-Net's output."""
    unet = tiny.tiny_sdxl_unet()
    x, text, pooled, time_ids = _sdxl_inputs(FRAMES, 2)
    context = CrossFrameContext()
    options = CrossFrameOptions(blocks="input+middle+output")
    with torch.no_grad():
        previous = install_processors(unet, context, options.blocks)
        hook = StepHook(context, lambda: True).attach(unet)
        try:
            context.run = FrameRun(RunPlan(frames=FRAMES, options=options))
            batched = _call(unet, x, text, pooled, time_ids)
            context.run = FrameRun(RunPlan(frames=FRAMES, options=options))
            same = _call(unet, x[:1].expand(FRAMES, -1, -1, -1), text, pooled, time_ids)
        finally:
            hook.remove()
            restore_processors(unet, previous)
        plain = _call(unet, x, text, pooled, time_ids)

        rec = tiny._Recorder()
        undo = tiny.install_reference(unet, rec, ("down_blocks", "mid_block", "up_blocks"))
        try:
            singles = []
            for i in range(FRAMES):
                singles.append(_call(unet, x[i:i + 1], text, pooled, time_ids))
                rec.next_frame()
        finally:
            undo()
    # batched rows are [uncond f0..f2; cond f0..f2]; each single call is [uncond fi; cond fi]
    reference = torch.cat([torch.stack([s[0] for s in singles]), torch.stack([s[1] for s in singles])])
    assert tiny.rel_diff(batched, reference) <= TOL
    assert tiny.rel_diff(batched[1:FRAMES], plain[1:FRAMES]) > 1e-2
    assert tiny.rel_diff(batched[:1], plain[:1]) <= TOL
    assert tiny.rel_diff(same, _plain_rows(plain, FRAMES)) <= TOL


def _plain_rows(plain, frames):
    """The plain output of frame 0, in every frame's row of both CFG groups."""
    return torch.cat([plain[:1].expand(frames, -1, -1, -1), plain[frames:frames + 1].expand(frames, -1, -1, -1)])


def test_deepcopy_keeps_one_context():
    context = CrossFrameContext()
    proc = CrossFrameAttnProcessor(context, "up_blocks.0.attentions.0.transformer_blocks.0.attn1")
    clone = copy.deepcopy(proc)
    assert clone is not proc and clone.context is context and clone.layer == proc.layer
    assert copy.copy(context) is context

    unet = tiny.tiny_unet()
    install_processors(unet, context, {"output"})
    twin = copy.deepcopy(unet)
    ours = [p for p in twin.attn_processors.values() if isinstance(p, CrossFrameAttnProcessor)]
    assert len(ours) == 4 and all(p.context is context for p in ours)


def test_unet_call_without_the_step_hook_is_an_error():
    unet = tiny.tiny_unet()
    context = CrossFrameContext()
    install_processors(unet, context, {"output"})
    context.run = FrameRun(RunPlan(frames=2, options=CrossFrameOptions()))
    with torch.no_grad(), pytest.raises(CrossFrameError, match="no denoising step"):
        unet(torch.randn(2, 4, 16, 16), 10, encoder_hidden_states=torch.randn(2, 5, tiny.TEXT_DIM))


# -- a model call cut into windows of frames and put back together -----------------------------------------------
def test_rows_cut_per_window_and_joined_back_in_place():
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    from cross_frame_diffusers.model_windows import cut_rows, join_rows

    frames, groups = 5, 2
    batch = torch.arange(groups * frames, dtype=torch.float32)[:, None]   # row r holds r
    shared = torch.ones(3)                                                 # not one row per image: passed whole
    bounds = [(0, 2), (2, 4), (4, 5)]
    parts = []
    for start, stop in bounds:
        cut = cut_rows({"x": batch, "more": [batch, shared], "scale": 0.5}, groups * frames, groups, start, stop)
        assert cut["more"][1] is shared and cut["scale"] == 0.5
        rows = [g * frames + f for g in range(groups) for f in range(start, stop)]   # each group's window rows
        assert cut["x"][:, 0].tolist() == rows
        parts.append(UNet2DConditionOutput(sample=cut["x"] * 10))
    joined = join_rows(parts, bounds, groups, frames, "test")
    assert isinstance(joined, UNet2DConditionOutput) and torch.equal(joined.sample, batch * 10)
    pairs = join_rows([(p.sample, [p.sample]) for p in parts], bounds, groups, frames, "test")
    assert torch.equal(pairs[0], batch * 10) and torch.equal(pairs[1][0], batch * 10)
    with pytest.raises(CrossFrameError, match="4 rows for a window of 1 frames x 2 group"):
        join_rows([parts[0].sample], [(4, 5)], groups, frames, "test")


def test_context_window_brackets_one_evaluation_of_the_run():
    run = FrameRun(RunPlan(frames=4, options=CrossFrameOptions()))
    context = CrossFrameContext()
    context.run = run
    context.set_window((0, 1))
    assert run._in_evaluation and context.frames == (0, 1)
    context.set_window((2, 3))
    assert run._in_evaluation
    context.set_window(None)
    assert not run._in_evaluation and context.frames is None

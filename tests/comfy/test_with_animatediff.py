"""Cross-frame attention beside AnimateDiff-Evolved (ADE), the pack most SD1.5 video users sample with:
ADE's own loader and sampling with a tiny random motion module (animatediff_models.py), our Batch Video
Sampler on ADE's model, and ADE's context options.

What 'right' means here. A motion module attends across all frames, so with a full module (down, mid and up
blocks) no frame of ADE + cross-frame attention equals any frame of ADE alone. The tiny module has down
blocks only (its loader accepts that), so nothing couples frames after the output blocks our patch acts in;
there frame 0, which attends to itself, must equal ADE alone exactly (up to round-off): proof that our patch
sees ADE's batch as the clip, in order, and takes nothing from other frames where it should not. Frames 1.. must
differ from ADE alone (the method acts) and the clip from our patch alone (the motion module acts). Store
Reference Attention -> Cross-Frame Attention Patch works on either side of ADE's loader.

Windows cannot be right: ADE's motion modules take every model call for the whole clip, and ADE's sliding
context options hand our patch windows it cannot follow. ADE's Views Only context options keep the whole clip
in every model call (the motion module works in views) and are right. Both stop with a CrossFrameError naming both packs and the
graph that works, and the next run is right again (ADE restores what it swapped in for sampling).

ADE is on no package registry: the tests find a checkout through $CFA_ANIMATEDIFF_PATH (default
~/.cache/cfa/custom_nodes/ComfyUI-AnimateDiff-Evolved) and skip, saying so, without one."""
from __future__ import annotations

import asyncio
import gc
import inspect

import pytest
import torch

from animatediff_models import (MOTION_MODULE, SKIP_REASON, TEXT_WIDTH, animatediff_path, sd15_channel_unet,
                                write_motion_module)
from graph_helpers import ksampler, latent_from_batch, patch, rel_diff, store, video_sampler

FRAMES = 4
RUN = dict(steps=2, cfg=5.0, seed=3)


@pytest.fixture(scope="module")
def ade(comfy, tmp_path_factory):
    """ADE's node classes, loaded the way ComfyUI loads custom nodes, with the tiny motion module in its
    motion-model folder."""
    path = animatediff_path()
    if path is None:
        pytest.skip(SKIP_REASON)
    import folder_paths
    if "ADE_AnimateDiffLoaderGen1" not in comfy.mapping:
        assert asyncio.run(comfy.nodes.load_custom_node(str(path), module_parent="custom_nodes")), \
            f"ComfyUI failed to load AnimateDiff-Evolved from {path} (see the log above)"
    folder = tmp_path_factory.mktemp("animatediff_models")
    write_motion_module(folder)
    folder_paths.add_model_folder_path("animatediff_models", str(folder))
    return comfy.mapping


@pytest.fixture(scope="module")
def unet(comfy, ade):
    yield sd15_channel_unet(comfy)
    # ComfyUI keeps sampled models loaded; drop these 3 GB before the rest of the session runs.
    comfy.model_management.unload_all_models()
    gc.collect()


@pytest.fixture(scope="module")
def wide_conds():
    g = torch.Generator().manual_seed(21)
    return ([[torch.randn(1, 8, TEXT_WIDTH, generator=g), {}]],
            [[torch.randn(1, 8, TEXT_WIDTH, generator=g), {}]])


@pytest.fixture(scope="module")
def clip():
    """4 frames at a 4x4 latent, changing smoothly from frame to frame."""
    g = torch.Generator().manual_seed(22)
    base, drift = torch.randn(1, 4, 4, 4, generator=g), torch.randn(1, 4, 4, 4, generator=g)
    return {"samples": torch.cat([base + 0.3 * k * drift for k in range(FRAMES)])}


def with_motion(ade, model, context_options=None):
    """ADE's AnimateDiff Loader (Gen1) on `model`: the tiny motion module, the model's own beta schedule."""
    loader = ade["ADE_AnimateDiffLoaderGen1"]()
    return loader.load_mm_and_inject_params(model, MOTION_MODULE, "use existing",
                                            context_options=context_options)[0]


def static_context(ade, length=2, overlap=1):
    return ade["ADE_StandardStaticContextOptions"]().create_options(length, overlap)[0]


@pytest.fixture(scope="module")
def runs(comfy, ade, unet, wide_conds, clip):
    """The same clip: ADE alone (KSampler), ours alone and ADE + ours (Batch Video Sampler, whole clip)."""
    animated = with_motion(ade, unet)
    return dict(
        animated=animated,
        ade=ksampler(comfy, animated, wide_conds, clip, **RUN)["samples"],
        ours=video_sampler(comfy, unet, wide_conds, clip, **RUN)[0]["samples"],
        both=video_sampler(comfy, animated, wide_conds, clip, **RUN)[0]["samples"],
    )


def test_batch_video_sampler_acts_beside_motion_module(runs):
    ade, ours, both = runs["ade"], runs["ours"], runs["both"]
    # Frame 0 attends to itself; no motion module follows the output blocks: ADE alone, to round-off.
    assert rel_diff(both[:1], ade[:1]) < 1e-4
    # Later frames attend to frames 0 and i-1: the method acts beside the motion module.
    assert rel_diff(both[1:], ade[1:]) > 1e-3
    # And the motion module still acts beside our patch.
    assert rel_diff(both, ours) > 1e-2


def test_patch_either_side_of_the_loader(comfy, ade, unet, runs, wide_conds, clip):
    """Store Reference Attention on ADE's model samples the reference; Cross-Frame Attention Patch before or
    after ADE's loader gives the same clip (both only add to the model's options), and every frame, frame 0
    included (it attends to the reference), differs from ADE alone."""
    store_model, state = store(comfy, runs["animated"])
    reference = ksampler(comfy, store_model, wide_conds, latent_from_batch(comfy, clip, 0, 1), **RUN)
    after = ksampler(comfy, patch(comfy, runs["animated"], state, reference), wide_conds, clip, **RUN)["samples"]
    before = with_motion(ade, patch(comfy, unet, state, reference))
    assert rel_diff(ksampler(comfy, before, wide_conds, clip, **RUN)["samples"], after) < 1e-6
    for frame in range(FRAMES):
        assert rel_diff(after[frame:frame + 1], runs["ade"][frame:frame + 1]) > 1e-3


def test_pack_windows_refused_under_animatediff(comfy, runs, wide_conds, clip):
    with pytest.raises(Exception) as caught:
        video_sampler(comfy, runs["animated"], wide_conds, clip, frames_per_batch=2, **RUN)
    message = str(caught.value)
    assert type(caught.value).__name__ == "CrossFrameError", message
    assert "Batch Video Sampler" in message and "AnimateDiff-Evolved" in message
    assert f"frames_per_batch to {FRAMES}" in message
    # The next run is right: ADE restored what it swapped in, our patch holds no stale run.
    again = video_sampler(comfy, runs["animated"], wide_conds, clip, **RUN)[0]["samples"]
    assert torch.equal(again, runs["both"])


def test_core_context_windows_refused_under_animatediff(comfy, runs, wide_conds, clip):
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode
    kw = dict(model=runs["animated"], context_length=2, context_overlap=0, context_schedule="batched",
              context_stride=1, closed_loop=False, fuse_method="pyramid", dim=0)
    params = inspect.signature(ContextWindowsManualNode.execute).parameters
    if "freenoise" in params:
        kw["freenoise"] = False
    windowed = ContextWindowsManualNode.execute(**kw).args[0]
    with pytest.raises(Exception) as caught:
        video_sampler(comfy, windowed, wide_conds, clip, **RUN)
    message = str(caught.value)
    assert type(caught.value).__name__ == "CrossFrameError", message
    assert "AnimateDiff-Evolved" in message and "Remove Context Windows (Manual)" in message


def test_animatediff_context_options_refused(comfy, ade, unet, runs, wide_conds, clip):
    sliding = with_motion(ade, unet, context_options=static_context(ade))
    with pytest.raises(Exception) as caught:
        video_sampler(comfy, sliding, wide_conds, clip, **RUN)
    message = str(caught.value)
    assert type(caught.value).__name__ == "CrossFrameError", message
    assert "Batch Video Sampler" in message and "AnimateDiff-Evolved's context options" in message
    assert "Views Only" in message and "remove the context_options input" in message
    again = video_sampler(comfy, runs["animated"], wide_conds, clip, **RUN)[0]["samples"]
    assert torch.equal(again, runs["both"])


def test_views_only_context_options_work(comfy, ade, unet, runs, wide_conds, clip):
    """ADE's Views Only context options: the motion module attends in views (here 2 frames, overlap 1) while
    every model call holds the whole clip, which cross-frame attention follows: the graph for clips longer
    than the motion module. Same invariants as without context options, against ADE with the same views."""
    views = ade["ADE_StandardStaticViewOptions"]().create_options(2, 1)[0]
    viewed = with_motion(ade, unet, context_options=ade["ADE_ViewsOnlyContextOptions"]().create_options(views)[0])
    alone = ksampler(comfy, viewed, wide_conds, clip, **RUN)["samples"]
    both = video_sampler(comfy, viewed, wide_conds, clip, **RUN)[0]["samples"]
    assert rel_diff(alone, runs["ade"]) > 1e-3          # the views changed what the motion module does
    assert rel_diff(both[:1], alone[:1]) < 1e-4
    assert rel_diff(both[1:], alone[1:]) > 1e-3

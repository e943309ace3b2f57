"""CrossFrameVideoPipeline / CrossFrameImg2ImgPipeline on tiny random models: the pipeline equals a plain
frame-by-frame implementation of the method whether the clip runs in one batch or in chunks, leaves frame 0 and
identical clips alone, survives processor swaps, restores the U-Net, and rejects bad input.

Comparisons are on the final latents (output_type="latent", before the VAE's clamp), fp32, DDIM (eta 0),
4 frames of 32x32, 3 denoising steps.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

_WHY = "the diffusers pipeline is an optional extra: pip install diffusers transformers"
pytest.importorskip("diffusers", reason=f"diffusers is not installed ({_WHY})")
pytest.importorskip("transformers", reason=f"transformers is not installed ({_WHY})")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from diffusers import StableDiffusionControlNetImg2ImgPipeline, StableDiffusionImg2ImgPipeline  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # this folder (helpers), never the repo root
import cfa_diffusers_tiny as tiny  # noqa: E402

from cross_frame_attention import CrossFrameError  # noqa: E402
from cross_frame_attention.diffusers_frontend.pipeline import (CrossFrameImg2ImgPipeline,  # noqa: E402
                                                       CrossFrameVideoPipeline)
from cross_frame_attention.diffusers_frontend.processor import CrossFrameAttnProcessor  # noqa: E402

# Max |difference| relative to the output's max |value| (latents reach about 14 here). Measured on CPU fp32
# (diffusers 0.42, torch 2.14): <= 2e-6 between paths that must agree (2.7e-5 absolute), 0.04 to 0.16 per
# frame where the method acts.
TOL = 1e-4
FRAMES = 4
SEED = 3


@pytest.fixture(scope="module")
def parts():
    return tiny.components()


@pytest.fixture(scope="module")
def clip():
    embeds, negative = tiny.embeddings()
    return dict(frames=tiny.random_frames(FRAMES, seed=11), controls=tiny.random_frames(FRAMES, seed=12),
                embeds=embeds, negative=negative)


@pytest.fixture(scope="module")
def reference(parts, clip):
    """reference(guidance=..., prefixes=..., anchors=..., include_self=..., active=...) -> latents, cached."""
    cache = {}

    def get(guidance=7.5, prefixes=("up_blocks",), active=None, **method):
        key = (guidance, prefixes, active, tuple(sorted(method.items())))
        if key not in cache:
            extra = dict(method, active=(lambda t: t <= active)) if active is not None else method
            cache[key] = tiny.reference_clip(parts, clip["frames"], clip["controls"], SEED, clip["embeds"],
                                             clip["negative"], guidance=guidance, prefixes=prefixes, **extra)
        return cache[key]

    return get


def edit(pipe, clip, frames_per_batch=0, generator=None, **kwargs):
    kwargs.setdefault("output_type", "latent")
    if isinstance(pipe, CrossFrameVideoPipeline):
        kwargs.setdefault("control_images", clip["controls"])
    return pipe(images=kwargs.pop("images", clip["frames"]),
                prompt_embeds=kwargs.pop("prompt_embeds", clip["embeds"]),
                negative_prompt_embeds=clip["negative"], strength=tiny.STRENGTH,
                num_inference_steps=tiny.STEPS, frames_per_batch=frames_per_batch,
                generator=generator if generator is not None else torch.Generator().manual_seed(SEED),
                **kwargs).images


def plain_edit(parts, clip, frames=None, controls=None, generator=None, guidance=7.5):
    pipe = tiny.make(StableDiffusionControlNetImg2ImgPipeline, parts)
    n = len(frames or clip["frames"])
    return pipe(image=frames or clip["frames"], control_image=controls or clip["controls"],
                prompt_embeds=clip["embeds"].repeat(n, 1, 1), negative_prompt_embeds=clip["negative"].repeat(n, 1, 1),
                strength=tiny.STRENGTH, num_inference_steps=tiny.STEPS, guidance_scale=guidance,
                generator=generator if generator is not None else torch.Generator().manual_seed(SEED),
                output_type="latent").images


def assert_untouched(pipe, before):
    after = pipe.unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before), "the U-Net's processors were not restored"
    assert not pipe.unet._forward_pre_hooks, "the step hook was left on the U-Net"
    assert pipe._cfa_clip is None


# -- sequential equals batched --------------------------------------------------------------------------------
@pytest.mark.parametrize("frames_per_batch", [0, 1, 2, 3])
def test_equals_frame_by_frame_reference(parts, clip, reference, frames_per_batch):
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    out = edit(pipe, clip, frames_per_batch)
    assert out.shape == (FRAMES, 4, tiny.SIZE // 2, tiny.SIZE // 2)
    assert tiny.rel_diff(out, reference()) <= TOL


@pytest.mark.parametrize("frames_per_batch", [0, 2])
def test_guidance_scale_one(parts, clip, reference, frames_per_batch):
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    out = edit(pipe, clip, frames_per_batch, guidance_scale=1.0)
    assert tiny.rel_diff(out, reference(guidance=1.0)) <= TOL
    assert tiny.rel_diff(out[1:], plain_edit(parts, clip, guidance=1.0)[1:]) > 1e-2


@pytest.mark.parametrize("frames_per_batch,options,expected", [
    (2, dict(blocks="input+middle+output"), dict(prefixes=("down_blocks", "mid_block", "up_blocks"))),
    (1, dict(blocks="input"), dict(prefixes=("down_blocks",))),
    (1, dict(anchors="first", include_self=True), dict(anchors="first", include_self=True)),
    (3, dict(anchors="previous"), dict(anchors="previous")),
    # percent 0.6 of the noise schedule is timestep 0.4 * 999: the step at 501 runs plain, 251 and 1 don't
    (1, dict(start_percent=0.6), dict(active=0.4 * 999)),
], ids=["all-blocks", "input-blocks", "first+self", "previous", "start-percent"])
def test_options_equal_reference(parts, clip, reference, frames_per_batch, options, expected):
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    out = edit(pipe, clip, frames_per_batch, **options)
    assert tiny.rel_diff(out, reference(**expected)) <= TOL
    assert tiny.rel_diff(out, reference()) > 1e-3  # the option really changed something


def test_bank_on_cpu_in_half_precision_changes_little(parts, clip, reference):
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    out = edit(pipe, clip, 1, bank_device="cpu", bank_dtype="bfloat16")
    assert tiny.rel_diff(out, reference()) <= 5e-2


# -- where the method must not act, and where it must ----------------------------------------------------------
def test_frame_zero_is_plain_and_the_method_acts(parts, clip, reference):
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    out = edit(pipe, clip)
    plain = plain_edit(parts, clip)
    assert tiny.rel_diff(out[:1], plain[:1]) <= TOL          # same noise as the stock pipeline, frame 0 untouched
    for i in range(1, FRAMES):
        assert tiny.rel_diff(out[i:i + 1], plain[i:i + 1]) > 3e-2   # later frames really attend elsewhere
    assert tiny.rel_diff(reference(), plain) > 3e-2


@pytest.mark.parametrize("frames_per_batch", [0, 3])
def test_identical_frames_give_the_plain_output(parts, clip, frames_per_batch):
    """Same frame, same control image, same noise for every frame: [first; previous] are copies of the frame's
    own tokens at every layer and step, which is plain self-attention."""
    frames, controls = [clip["frames"][1]] * FRAMES, [clip["controls"][1]] * FRAMES

    def gens():
        return [torch.Generator().manual_seed(SEED) for _ in range(FRAMES)]

    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    out = edit(pipe, clip, frames_per_batch, images=frames, control_images=controls, generator=gens())
    plain = plain_edit(parts, clip, frames, controls, generator=gens())
    assert tiny.rel_diff(out, plain) <= TOL
    assert tiny.rel_diff(out[1:], out[:1].expand_as(out[1:])) <= TOL


# -- processors: reinstalled every call, restored after it -------------------------------------------------------
@pytest.mark.parametrize("swap", ["set_default_attn_processor", "enable_attention_slicing"])
def test_processor_swaps_before_the_call_do_not_switch_the_method_off(clip, reference, swap):
    parts = tiny.components()
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    if swap == "set_default_attn_processor":
        pipe.unet.set_default_attn_processor()
    else:
        pipe.enable_attention_slicing(1)
    before = dict(pipe.unet.attn_processors)
    assert not any(isinstance(p, CrossFrameAttnProcessor) for p in before.values())
    out = edit(pipe, clip, 2)
    assert tiny.rel_diff(out, reference()) <= TOL  # fresh parts: same seeds, same weights as `parts`
    assert_untouched(pipe, before)


def test_processors_are_ours_during_the_call_only(parts, clip):
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    before = dict(pipe.unet.attn_processors)
    seen = {}

    def spy(p, i, t, kwargs):
        seen[i] = {k: type(v).__name__ for k, v in p.unet.attn_processors.items()}
        return kwargs

    edit(pipe, clip, 0, callback_on_step_end=spy, blocks="middle+output")
    ours = {k for k, v in seen[0].items() if v == "CrossFrameAttnProcessor"}
    assert ours == {k for k in before if ".attn1." in k and k.startswith(("mid_block", "up_blocks"))}
    assert_untouched(pipe, before)


def test_processors_restored_when_the_call_fails(parts, clip, reference):
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    before = dict(pipe.unet.attn_processors)

    def boom(p, i, t, kwargs):
        if p._cfa_clip.current[0] == 2 and i == 1:
            raise RuntimeError("stop in the second chunk")
        return kwargs

    with pytest.raises(RuntimeError, match="second chunk"):
        edit(pipe, clip, 2, callback_on_step_end=boom)
    assert_untouched(pipe, before)
    assert tiny.rel_diff(edit(pipe, clip, 2), reference()) <= TOL  # and the next call is clean


def test_interrupt_stops_after_the_current_chunk(parts, clip, reference):
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    before = dict(pipe.unet.attn_processors)

    def stop(p, i, t, kwargs):
        p._interrupt = True
        return kwargs

    out = edit(pipe, clip, 2, callback_on_step_end=stop)
    assert out.shape[0] == 2  # the first chunk only
    assert_untouched(pipe, before)


# -- input checks --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(images=[]), "no images"),
    (dict(images=None), "no images"),
    (dict(control_images=None), "control_images is missing"),
    (dict(control_images=tiny.random_frames(FRAMES - 1, seed=1)), "3 control images for 4 images"),
    (dict(images=tiny.random_frames(3, seed=1) + tiny.random_frames(1, seed=2, size=48)), "different sizes"),
    (dict(control_images=tiny.random_frames(FRAMES, seed=1, size=48)), "same size as the frames"),
    (dict(generator=[torch.Generator()] * 3), "3 generators for 4 frames"),
    (dict(blocks="decoder"), "not a block choice"),
    (dict(anchors="last"), "anchors"),
    (dict(frames_per_batch=-1), "frames_per_batch"),
    (dict(num_images_per_prompt=2), "num_images_per_prompt"),
    (dict(image=tiny.random_frames(1, seed=1)), "images="),
    (dict(prompt="a cat"), "one of the two"),
    (dict(prompt_embeds=torch.zeros(3, tiny.TEXT_LEN, tiny.TEXT_DIM)), "3 rows for 4 frames"),
], ids=["empty", "none", "no-control", "control-count", "frame-sizes", "control-size", "generators", "blocks",
        "anchors", "frames-per-batch", "images-per-prompt", "image-kwarg", "prompt-and-embeds", "embed-rows"])
def test_bad_input_raises_a_clear_value_error(parts, clip, kwargs, match):
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    before = dict(pipe.unet.attn_processors)
    kwargs = dict(kwargs)
    fpb = kwargs.pop("frames_per_batch", 0)
    with pytest.raises(ValueError, match=match) as info:
        edit(pipe, clip, fpb, **kwargs)
    assert isinstance(info.value, CrossFrameError)
    assert_untouched(pipe, before)


# -- outputs and prompts -----------------------------------------------------------------------------------------
def test_output_types_and_text_prompts(tmp_path, clip):
    parts = tiny.components(text=tiny.tiny_text(tmp_path))
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    common = dict(images=clip["frames"], control_images=clip["controls"], strength=tiny.STRENGTH,
                  num_inference_steps=tiny.STEPS, negative_prompt="blue dog")

    def run(**kw):
        return pipe(generator=torch.Generator().manual_seed(SEED), **common, **kw)

    pil = run(prompt="a photo of a red cat").images
    assert isinstance(pil, list) and len(pil) == FRAMES
    assert all(isinstance(im, PIL.Image.Image) and im.size == (tiny.SIZE, tiny.SIZE) for im in pil)
    whole = run(prompt="a photo of a red cat", output_type="np").images
    chunked, nsfw = run(prompt="a photo of a red cat", output_type="np", frames_per_batch=3, return_dict=False)
    assert isinstance(whole, np.ndarray) and whole.shape == (FRAMES, tiny.SIZE, tiny.SIZE, 3)
    assert nsfw is None
    assert np.abs(chunked - whole).max() <= 1e-4
    assert np.abs(np.asarray(pil[2], dtype=np.float32) / 255 - whole[2]).max() <= 1 / 255 + 1e-6
    pt = run(prompt="a photo of a red cat", output_type="pt", frames_per_batch=1).images
    assert pt.shape == (FRAMES, 3, tiny.SIZE, tiny.SIZE)
    assert np.abs(pt.permute(0, 2, 3, 1).numpy() - whole).max() <= 1e-4
    per_frame = run(prompt=["a red cat", "a red cat", "a blue dog", "a blue dog"], output_type="np",
                    frames_per_batch=2).images
    assert np.abs(per_frame[:2] - run(prompt="a red cat", output_type="np").images[:2]).max() <= 1e-4
    with pytest.raises(ValueError, match="3 prompts for 4 frames"):
        run(prompt=["a", "b", "c"])


def test_prompt_embeds_per_frame(parts, clip, reference):
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    out = edit(pipe, clip, 2, prompt_embeds=clip["embeds"].repeat(FRAMES, 1, 1))  # negative: one row
    assert tiny.rel_diff(out, reference()) <= TOL


def test_frames_as_one_tensor(parts, clip, reference):
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    batch = torch.stack([torch.from_numpy(np.asarray(f, dtype=np.float32) / 255).permute(2, 0, 1)
                         for f in clip["frames"]])
    out = edit(pipe, clip, 2, images=batch)
    assert tiny.rel_diff(out, reference()) <= 1e-3  # PIL -> float conversion differs from a tensor's by round-off


# -- the variant without ControlNet --------------------------------------------------------------------------------
def test_img2img_variant(clip):
    parts = tiny.components(with_controlnet=False)
    pipe = tiny.make(CrossFrameImg2ImgPipeline, parts)
    whole = edit(pipe, clip, 0)
    for fpb in (1, 3):
        assert tiny.rel_diff(edit(pipe, clip, fpb), whole) <= TOL
    plain = tiny.make(StableDiffusionImg2ImgPipeline, parts)(
        image=clip["frames"], prompt_embeds=clip["embeds"].repeat(FRAMES, 1, 1),
        negative_prompt_embeds=clip["negative"].repeat(FRAMES, 1, 1), strength=tiny.STRENGTH,
        num_inference_steps=tiny.STEPS, generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    assert tiny.rel_diff(whole[:1], plain[:1]) <= TOL
    assert tiny.rel_diff(whole[1:], plain[1:]) > 3e-2
    with pytest.raises(ValueError, match="no ControlNet"):
        edit(pipe, clip, 0, control_images=clip["controls"])


def test_loads_as_its_parent(parts):
    pipe = tiny.make(StableDiffusionControlNetImg2ImgPipeline, parts)
    cross = CrossFrameVideoPipeline.from_pipe(pipe)
    assert isinstance(cross, StableDiffusionControlNetImg2ImgPipeline) and cross.unet is pipe.unet


@pytest.mark.parametrize("scheduler", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler"])
def test_chunking_does_not_matter_with_other_deterministic_schedulers(clip, scheduler):
    import diffusers
    parts = tiny.components(with_controlnet=False)
    parts["scheduler"] = getattr(diffusers, scheduler).from_config(parts["scheduler"].config)
    pipe = tiny.make(CrossFrameImg2ImgPipeline, parts)
    whole = edit(pipe, clip, 0)
    assert tiny.rel_diff(edit(pipe, clip, 1), whole) <= TOL
    assert tiny.rel_diff(edit(pipe, clip, 3), whole) <= TOL


def test_two_controlnets_take_one_list_of_control_images_each(clip):
    parts = tiny.components()
    parts["controlnet"] = [parts["controlnet"], tiny.tiny_controlnet(seed=9)]
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    controls = [clip["controls"], clip["frames"][::-1]]
    whole = edit(pipe, clip, 0, control_images=controls)
    assert tiny.rel_diff(edit(pipe, clip, 3, control_images=controls), whole) <= TOL
    assert tiny.rel_diff(whole, edit(pipe, clip, 0, control_images=[clip["controls"]] * 2)) > 1e-3
    with pytest.raises(ValueError, match="2 ControlNets need as many lists"):
        edit(pipe, clip, 0, control_images=clip["controls"])

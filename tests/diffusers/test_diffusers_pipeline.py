"""CrossFrameVideoPipeline / CrossFrameImg2ImgPipeline on tiny random models. TestVideoPipelineContract runs
the checks shared with the SDXL pipeline (pipeline_contract.py: frame 0 is the stock pipeline's, the clip equals a
plain frame-by-frame implementation of the method in one batch or in windows, ancestral/SDE schedulers
whatever the window size, keyframe anchors, options, processors restored, bad
input rejected, text prompts and output types). The tests below are this pipeline's own: identical clips left
alone, bank options, processor swaps, interrupts, per-frame embeddings, frames as a tensor,
the variant without ControlNet, other schedulers, two ControlNets.

Comparisons are on the final latents (output_type="latent", before the VAE's clamp), fp32, DDIM (eta 0),
4 frames of 32x32, 3 denoising steps, guidance 7.5 (the SD default).
"""
from __future__ import annotations

import pytest

import needs_diffusers  # noqa: F401  (first: skips this module without the diffusers extra)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import StableDiffusionControlNetImg2ImgPipeline, StableDiffusionImg2ImgPipeline  # noqa: E402

import cfa_diffusers_tiny as tiny  # noqa: E402

from cross_frame_diffusers.pipeline import (CrossFrameImg2ImgPipeline,  # noqa: E402
                                            CrossFrameVideoPipeline)
from cross_frame_diffusers.processor import CrossFrameAttnProcessor  # noqa: E402
from pipeline_contract import FRAMES, SEED, TOL, VideoPipelineContract, assert_untouched  # noqa: E402


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


class TestVideoPipelineContract(VideoPipelineContract):
    """The checks shared with CrossFrameVideoXLPipeline (pipeline_contract.py), for CrossFrameVideoPipeline."""

    pipeline = CrossFrameVideoPipeline
    stock = StableDiffusionControlNetImg2ImgPipeline
    after_images = [None]  # nsfw_content_detected: no safety checker
    edit = staticmethod(edit)
    plain_edit = staticmethod(plain_edit)

    @staticmethod
    def text_parts(tmp_path):
        return tiny.components(text=tiny.tiny_text(tmp_path))


# -- bank options: accepted, and nothing to keep ----------------------------------------------------------------
def test_bank_options_change_nothing_since_windows_record_no_bank(parts, clip, reference):
    """The pipelines sample the whole clip in one loop: windows pass their anchors on within each U-Net call
    (in the model's dtype), so no bank is recorded and bank_device / bank_dtype leave the result as it is."""
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    out = edit(pipe, clip, 1, bank_device="cpu", bank_dtype="bfloat16")
    assert tiny.rel_diff(out, reference()) <= TOL


# -- where the method must not act -------------------------------------------------------------------------------
@pytest.mark.thread_sensitive
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


# -- processors: reinstalled every call --------------------------------------------------------------------------
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


def test_interrupt_skips_the_remaining_steps_of_every_frame(parts, clip, reference):
    """As in the parent pipeline: one denoising loop for the whole clip, so an interrupt leaves every frame
    where it stood (same frames whatever the window size), not a shorter clip."""
    pipe = tiny.make(CrossFrameVideoPipeline, parts)
    before = dict(pipe.unet.attn_processors)

    def stop(p, i, t, kwargs):
        p._interrupt = True
        return kwargs

    out = edit(pipe, clip, 2, callback_on_step_end=stop)
    assert out.shape[0] == FRAMES
    assert tiny.rel_diff(edit(pipe, clip, 0, callback_on_step_end=stop), out) <= TOL
    assert tiny.rel_diff(out, reference()) > 1e-2          # stopped after the first step
    assert_untouched(pipe, before)


# -- prompt embeddings per frame, frames as one tensor --------------------------------------------------------
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


@pytest.mark.parametrize("scheduler", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler"])
def test_windows_do_not_matter_with_other_deterministic_schedulers(clip, scheduler):
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

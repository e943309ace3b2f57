"""CrossFrameVideoXLPipeline on tiny random SDXL-shaped models. TestVideoPipelineContract runs the checks shared
with the SD pipeline (pipeline_contract.py: frame 0 is the stock SDXL ControlNet img2img pipeline's, the clip
equals a plain frame-by-frame implementation of the method in one batch or in windows, windows with
ancestral/SDE schedulers, keyframe anchors, options, processors
restored after the call and after an error, bad input rejected, text prompts and output types). The tests below
are SDXL's own: the exports, a VAE with latents mean/std, size conditioning and pooled embeddings reaching the
right frames in every window, the extra input checks of the pooled embeddings, prompt_2.

Comparisons are on the final latents (output_type="latent"), fp32, DDIM (eta 0), 4 frames of 32x32, 3 denoising
steps, guidance 5 (the SDXL default).
"""
from __future__ import annotations

import pytest

import needs_diffusers  # noqa: F401  (first: skips this module without the diffusers extra)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import StableDiffusionXLControlNetImg2ImgPipeline as StockXL  # noqa: E402

import cfa_diffusers_tiny as tiny  # noqa: E402

from cross_frame_diffusers import pipeline as pipeline_module  # noqa: E402
from cross_frame_diffusers.pipeline import CrossFrameVideoXLPipeline  # noqa: E402
from pipeline_contract import FRAMES, SEED, TOL, VideoPipelineContract, assert_rejected  # noqa: E402

GUIDANCE = 5.0


@pytest.fixture(scope="module")
def parts():
    return tiny.sdxl_components()


@pytest.fixture(scope="module")
def clip():
    return dict(frames=tiny.random_frames(FRAMES, seed=11), controls=tiny.random_frames(FRAMES, seed=12),
                embeds=tiny.sdxl_embeddings(FRAMES))


@pytest.fixture(scope="module")
def reference(parts, clip):
    """reference(guidance=..., prefixes=..., active=..., call_kwargs=..., anchors=...) -> latents, cached."""
    cache = {}

    def get(guidance=GUIDANCE, prefixes=("up_blocks",), active=None, call_kwargs=None, **method):
        key = (guidance, prefixes, active, repr(call_kwargs), tuple(sorted(method.items())))
        if key not in cache:
            extra = dict(method, active=(lambda t: t <= active)) if active is not None else method
            cache[key] = tiny.frame_by_frame(StockXL, parts, clip["frames"], clip["controls"], SEED,
                                             clip["embeds"], guidance=guidance, prefixes=prefixes,
                                             call_kwargs=call_kwargs, **extra)
        return cache[key]

    return get


def edit(pipe, clip, frames_per_batch=0, generator=None, **kwargs):
    kwargs.setdefault("output_type", "latent")
    kwargs.setdefault("control_images", clip["controls"])
    kwargs.setdefault("guidance_scale", GUIDANCE)
    embeds = {name: kwargs.pop(name, rows) for name, rows in clip["embeds"].items()}
    return pipe(images=kwargs.pop("images", clip["frames"]), strength=tiny.STRENGTH,
                num_inference_steps=tiny.STEPS, frames_per_batch=frames_per_batch,
                generator=generator if generator is not None else torch.Generator().manual_seed(SEED),
                **embeds, **kwargs).images


def plain_edit(parts, clip, guidance=GUIDANCE):
    """The stock SDXL ControlNet img2img pipeline over the whole clip as one batch (one embedding row each)."""
    n = len(clip["frames"])
    embeds = {k: v.expand(n, *v.shape[1:]) for k, v in clip["embeds"].items()}
    return tiny.make(StockXL, parts)(
        image=clip["frames"], control_image=clip["controls"], strength=tiny.STRENGTH,
        num_inference_steps=tiny.STEPS, guidance_scale=guidance, generator=torch.Generator().manual_seed(SEED),
        output_type="latent", **embeds).images


class TestVideoPipelineContract(VideoPipelineContract):
    """The checks shared with CrossFrameVideoPipeline (pipeline_contract.py), for CrossFrameVideoXLPipeline."""

    pipeline = CrossFrameVideoXLPipeline
    stock = StockXL
    after_images = []  # the stock SDXL pipeline returns (images,)
    edit = staticmethod(edit)
    plain_edit = staticmethod(plain_edit)

    @staticmethod
    def text_parts(tmp_path):
        return tiny.sdxl_components(text=tiny.tiny_sdxl_text(tmp_path))


def test_exported_from_the_pipeline_module():
    assert "CrossFrameVideoXLPipeline" in pipeline_module.__all__
    assert issubclass(CrossFrameVideoXLPipeline, StockXL)
    for name in ("CrossFrameVideoPipeline", "CrossFrameImg2ImgPipeline", "timestep_bounds"):
        assert name in pipeline_module.__all__ and hasattr(pipeline_module, name)


# -- the VAE's latent normalisation, size conditioning and pooled embeddings per frame ---------------------------
def test_vae_latent_mean_and_std_as_the_stock_pipeline(clip):
    """A VAE whose config has latents_mean / latents_std (the parent normalises the encoded latents with them):
    frame 0 still equals the stock pipeline's, and windows still equal the whole clip."""
    parts = tiny.sdxl_components()
    parts["vae"] = tiny.tiny_vae(latents_mean=(0.5, -0.3, 0.2, 0.0), latents_std=(2.0, 0.5, 1.5, 1.0))
    pipe = tiny.make(CrossFrameVideoXLPipeline, parts)
    out = edit(pipe, clip)
    assert tiny.rel_diff(out[:1], plain_edit(parts, clip)[:1]) <= TOL
    assert tiny.rel_diff(out[:1], plain_edit(tiny.sdxl_components(), clip)[:1]) > 1e-2  # the config matters
    assert tiny.rel_diff(edit(pipe, clip, 3), out) <= TOL


def test_size_conditioning_reaches_every_window(parts, clip, reference):
    """add_time_ids (original/target size, crop) are built by the parent, one row per frame, and cut to each
    window with the rest of the call."""
    sizes = dict(original_size=(64, 48), target_size=(40, 40), crops_coords_top_left=(4, 0))
    out = edit(tiny.make(CrossFrameVideoXLPipeline, parts), clip, 3, **sizes)
    assert tiny.rel_diff(out, reference(call_kwargs=sizes)) <= TOL
    assert tiny.rel_diff(out, reference()) > 1e-3


def test_pooled_rows_go_to_their_frames(parts, clip):
    """Swap the pooled embeddings of frames 2 and 3 (the second window of 2): frames 0 and 1 must not move,
    frame 2 must."""
    pipe = tiny.make(CrossFrameVideoXLPipeline, parts)
    pooled = clip["embeds"]["pooled_prompt_embeds"]
    out = edit(pipe, clip, 2)
    swapped = edit(pipe, clip, 2, pooled_prompt_embeds=pooled[[0, 1, 3, 2]])
    assert tiny.rel_diff(swapped[:2], out[:2]) <= TOL
    assert tiny.rel_diff(swapped[2:3], out[2:3]) > 1e-2


# -- input checks of SDXL's conditioning (the common ones are in the contract) -----------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(pooled_prompt_embeds=torch.zeros(3, tiny.TEXT_DIM)), "pooled_prompt_embeds has 3 rows for 4 frames"),
    (dict(pooled_prompt_embeds=None), "needs pooled_prompt_embeds"),
    (dict(negative_pooled_prompt_embeds=None), "needs negative_pooled_prompt_embeds"),
], ids=["pooled-rows", "no-pooled", "no-negative-pooled"])
def test_bad_pooled_embeddings_raise_a_clear_value_error(parts, clip, kwargs, match):
    assert_rejected(tiny.make(CrossFrameVideoXLPipeline, parts), edit, clip, kwargs, match)


# -- the second prompt goes to the second text encoder -----------------------------------------------------------
def test_prompt_2_changes_the_output(tmp_path, clip):
    pipe = tiny.make(CrossFrameVideoXLPipeline, tiny.sdxl_components(text=tiny.tiny_sdxl_text(tmp_path)))
    common = dict(images=clip["frames"], control_images=clip["controls"], strength=tiny.STRENGTH,
                  num_inference_steps=tiny.STEPS, negative_prompt="blue dog", output_type="np")

    def run(**kw):
        return pipe(generator=torch.Generator().manual_seed(SEED), **common, **kw).images

    whole = run(prompt="a photo of a red cat")
    second = run(prompt="a photo of a red cat", prompt_2="a blue dog")
    assert np.abs(second - whole).max() > 1e-3  # prompt_2 goes to the second text encoder

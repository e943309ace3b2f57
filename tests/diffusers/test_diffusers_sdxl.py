"""CrossFrameVideoXLPipeline on tiny random SDXL-shaped models: frame 0 is the stock SDXL ControlNet img2img
pipeline's, the clip equals a plain frame-by-frame implementation of the method whether it runs in one batch or
in chunks (pooled embeddings and size conditioning reach the right frames), later frames really change, the
U-Net's processors come back after the call and after an error, and bad input is rejected with a clear error.

Comparisons are on the final latents (output_type="latent"), fp32, DDIM (eta 0), 4 frames of 32x32, 3 denoising
steps, guidance 5 (the SDXL default).
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
from diffusers import StableDiffusionXLControlNetImg2ImgPipeline as StockXL  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # this folder (helpers), never the repo root
import cfa_diffusers_tiny as tiny  # noqa: E402

from cross_frame_attention import CrossFrameError  # noqa: E402
from cross_frame_attention.diffusers_frontend import pipeline as pipeline_module  # noqa: E402
from cross_frame_attention.diffusers_frontend.pipeline import CrossFrameVideoXLPipeline  # noqa: E402

# Max |difference| relative to the output's max |value| (latents reach about 12 here). Paths that must agree
# differ by round-off (~1e-6); where the method acts frames differ by ~0.2.
TOL = 1e-4
FRAMES = 4
SEED = 3
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


def plain_edit(parts, clip):
    """The stock SDXL ControlNet img2img pipeline over the whole clip as one batch (one embedding row each)."""
    n = len(clip["frames"])
    embeds = {k: v.expand(n, *v.shape[1:]) for k, v in clip["embeds"].items()}
    return tiny.make(StockXL, parts)(
        image=clip["frames"], control_image=clip["controls"], strength=tiny.STRENGTH,
        num_inference_steps=tiny.STEPS, guidance_scale=GUIDANCE, generator=torch.Generator().manual_seed(SEED),
        output_type="latent", **embeds).images


def assert_untouched(pipe, before):
    after = pipe.unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before), "the U-Net's processors were not restored"
    assert not pipe.unet._forward_pre_hooks, "the step hook was left on the U-Net"
    assert pipe._cfa_clip is None


def test_exported_from_the_pipeline_module():
    assert "CrossFrameVideoXLPipeline" in pipeline_module.__all__
    assert issubclass(CrossFrameVideoXLPipeline, StockXL)
    for name in ("CrossFrameVideoPipeline", "CrossFrameImg2ImgPipeline", "timestep_bounds"):
        assert name in pipeline_module.__all__ and hasattr(pipeline_module, name)


# -- frame 0 is the stock pipeline's; later frames are the method's ----------------------------------------------
def test_frame_zero_is_the_stock_pipeline_and_later_frames_change(parts, clip, reference):
    out = edit(tiny.make(CrossFrameVideoXLPipeline, parts), clip)
    plain = plain_edit(parts, clip)
    assert out.shape == (FRAMES, 4, tiny.SIZE // 2, tiny.SIZE // 2)
    assert tiny.rel_diff(out[:1], plain[:1]) <= TOL      # same noise and conditioning as the stock pipeline
    for i in range(1, FRAMES):
        assert tiny.rel_diff(out[i:i + 1], plain[i:i + 1]) > 3e-2   # measured ~0.2
    assert tiny.rel_diff(reference(), plain) > 3e-2      # the reference itself is not the plain pipeline


def test_vae_latent_mean_and_std_as_the_stock_pipeline(clip):
    """A VAE whose config has latents_mean / latents_std (the parent normalises the encoded latents with them):
    frame 0 still equals the stock pipeline's, and chunks still equal the whole clip."""
    parts = tiny.sdxl_components()
    parts["vae"] = tiny.tiny_vae(latents_mean=(0.5, -0.3, 0.2, 0.0), latents_std=(2.0, 0.5, 1.5, 1.0))
    pipe = tiny.make(CrossFrameVideoXLPipeline, parts)
    out = edit(pipe, clip)
    assert tiny.rel_diff(out[:1], plain_edit(parts, clip)[:1]) <= TOL
    assert tiny.rel_diff(out[:1], plain_edit(tiny.sdxl_components(), clip)[:1]) > 1e-2  # the config matters
    assert tiny.rel_diff(edit(pipe, clip, 3), out) <= TOL


# -- sequential equals batched --------------------------------------------------------------------------------
@pytest.mark.parametrize("frames_per_batch", [0, 1, 2, 3])
def test_equals_frame_by_frame_reference(parts, clip, reference, frames_per_batch):
    out = edit(tiny.make(CrossFrameVideoXLPipeline, parts), clip, frames_per_batch)
    assert tiny.rel_diff(out, reference()) <= TOL


@pytest.mark.parametrize("frames_per_batch,options,expected", [
    (2, dict(blocks="input+middle+output"), dict(prefixes=("down_blocks", "mid_block", "up_blocks"))),
    # percent 0.6 of the noise schedule is timestep 0.4 * 999: the step at 501 runs plain, 251 and 1 don't
    (3, dict(start_percent=0.6, anchors="first", include_self=True),
     dict(active=0.4 * 999, anchors="first", include_self=True)),
    (2, dict(guidance_scale=1.0), dict(guidance=1.0)),
], ids=["all-blocks", "start-percent+first+self", "no-cfg"])
def test_options_equal_reference(parts, clip, reference, frames_per_batch, options, expected):
    out = edit(tiny.make(CrossFrameVideoXLPipeline, parts), clip, frames_per_batch, **options)
    assert tiny.rel_diff(out, reference(**expected)) <= TOL
    assert tiny.rel_diff(out, reference()) > 1e-3  # the option really changed something


def test_size_conditioning_reaches_every_chunk(parts, clip, reference):
    """add_time_ids (original/target size, crop) are built by the parent per chunk: one row per frame."""
    sizes = dict(original_size=(64, 48), target_size=(40, 40), crops_coords_top_left=(4, 0))
    out = edit(tiny.make(CrossFrameVideoXLPipeline, parts), clip, 3, **sizes)
    assert tiny.rel_diff(out, reference(call_kwargs=sizes)) <= TOL
    assert tiny.rel_diff(out, reference()) > 1e-3


def test_pooled_rows_go_to_their_frames(parts, clip):
    """Swap the pooled embeddings of frames 2 and 3 (the second chunk of 2): frames 0 and 1 must not move,
    frame 2 must."""
    pipe = tiny.make(CrossFrameVideoXLPipeline, parts)
    pooled = clip["embeds"]["pooled_prompt_embeds"]
    out = edit(pipe, clip, 2)
    swapped = edit(pipe, clip, 2, pooled_prompt_embeds=pooled[[0, 1, 3, 2]])
    assert tiny.rel_diff(swapped[:2], out[:2]) <= TOL
    assert tiny.rel_diff(swapped[2:3], out[2:3]) > 1e-2


# -- processors: ours during the call only, restored after it (also on errors) ------------------------------------
def test_processors_are_ours_during_the_call_only(parts, clip):
    pipe = tiny.make(CrossFrameVideoXLPipeline, parts)
    before = dict(pipe.unet.attn_processors)
    seen = {}

    def spy(p, i, t, kwargs):
        seen[i] = {k: type(v).__name__ for k, v in p.unet.attn_processors.items()}
        return kwargs

    edit(pipe, clip, 2, callback_on_step_end=spy)
    ours = {k for k, v in seen[0].items() if v == "CrossFrameAttnProcessor"}
    assert ours == {k for k in before if ".attn1." in k and k.startswith("up_blocks")}
    assert ours
    assert_untouched(pipe, before)


def test_processors_restored_when_the_call_fails(parts, clip, reference):
    pipe = tiny.make(CrossFrameVideoXLPipeline, parts)
    before = dict(pipe.unet.attn_processors)

    def boom(p, i, t, kwargs):
        if p._cfa_clip.current[0] == 2 and i == 1:
            raise RuntimeError("stop in the second chunk")
        return kwargs

    with pytest.raises(RuntimeError, match="second chunk"):
        edit(pipe, clip, 2, callback_on_step_end=boom)
    assert_untouched(pipe, before)
    assert tiny.rel_diff(edit(pipe, clip, 2), reference()) <= TOL  # and the next call is clean


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
    (dict(control_image=tiny.random_frames(1, seed=1)), "images="),
    (dict(prompt="a cat"), "one of the two"),
    (dict(prompt_embeds=torch.zeros(3, tiny.TEXT_LEN, tiny.TEXT_DIM)), "3 rows for 4 frames"),
    (dict(pooled_prompt_embeds=torch.zeros(3, tiny.TEXT_DIM)), "pooled_prompt_embeds has 3 rows for 4 frames"),
    (dict(pooled_prompt_embeds=None), "needs pooled_prompt_embeds"),
    (dict(negative_pooled_prompt_embeds=None), "needs negative_pooled_prompt_embeds"),
], ids=["empty", "none", "no-control", "control-count", "frame-sizes", "control-size", "generators", "blocks",
        "anchors", "frames-per-batch", "images-per-prompt", "image-kwarg", "control-image-kwarg",
        "prompt-and-embeds", "embed-rows", "pooled-rows", "no-pooled", "no-negative-pooled"])
def test_bad_input_raises_a_clear_value_error(parts, clip, kwargs, match):
    pipe = tiny.make(CrossFrameVideoXLPipeline, parts)
    before = dict(pipe.unet.attn_processors)
    kwargs = dict(kwargs)
    fpb = kwargs.pop("frames_per_batch", 0)
    with pytest.raises(ValueError, match=match) as info:
        edit(pipe, clip, fpb, **kwargs)
    assert isinstance(info.value, CrossFrameError)
    assert_untouched(pipe, before)


# -- text prompts through both text encoders, output types ------------------------------------------------------------
def test_text_prompts_and_output_types(tmp_path, clip):
    pipe = tiny.make(CrossFrameVideoXLPipeline, tiny.sdxl_components(text=tiny.tiny_sdxl_text(tmp_path)))
    common = dict(images=clip["frames"], control_images=clip["controls"], strength=tiny.STRENGTH,
                  num_inference_steps=tiny.STEPS, negative_prompt="blue dog")

    def run(**kw):
        return pipe(generator=torch.Generator().manual_seed(SEED), **common, **kw)

    pil = run(prompt="a photo of a red cat").images
    assert isinstance(pil, list) and len(pil) == FRAMES
    assert all(isinstance(im, PIL.Image.Image) and im.size == (tiny.SIZE, tiny.SIZE) for im in pil)
    whole = run(prompt="a photo of a red cat", output_type="np").images
    assert isinstance(whole, np.ndarray) and whole.shape == (FRAMES, tiny.SIZE, tiny.SIZE, 3)
    (chunked,) = run(prompt="a photo of a red cat", output_type="np", frames_per_batch=3, return_dict=False)
    assert np.abs(chunked - whole).max() <= 1e-4
    per_frame = run(prompt=["a red cat", "a red cat", "a blue dog", "a blue dog"], output_type="np",
                    frames_per_batch=2).images
    assert np.abs(per_frame[:2] - run(prompt="a red cat", output_type="np").images[:2]).max() <= 1e-4
    assert np.abs(per_frame[2:] - run(prompt="a red cat", output_type="np").images[2:]).max() > 1e-3
    second = run(prompt="a photo of a red cat", prompt_2="a blue dog", output_type="np").images
    assert np.abs(second - whole).max() > 1e-3  # prompt_2 goes to the second text encoder
    with pytest.raises(ValueError, match="3 prompts for 4 frames"):
        run(prompt=["a", "b", "c"])


def test_loads_as_its_parent(parts):
    pipe = tiny.make(StockXL, parts)
    cross = CrossFrameVideoXLPipeline.from_pipe(pipe)
    assert isinstance(cross, StockXL) and cross.unet is pipe.unet and cross.controlnet is pipe.controlnet

"""What every cross-frame ControlNet video pipeline must do, written once for the SD and the SDXL one.

`VideoPipelineContract` holds the shared tests. A test module runs them for its pipeline by subclassing it as
`class TestVideoPipelineContract(VideoPipelineContract)` and setting the class attributes below; the tests take
that module's fixtures:
    parts      -- module-scoped tiny components of the pipeline (never mutated by these tests)
    clip       -- dict with "frames" and "controls" (FRAMES random PIL images each) and the prompt embeddings
    reference  -- reference(guidance=..., prefixes=..., anchors=..., include_self=..., active=...) -> latents of
                  the plain frame-by-frame implementation of the method (tiny.frame_by_frame), cached
Pipeline-specific checks stay in the pipeline's own test module.

Comparisons are on the final latents (output_type="latent"), fp32, DDIM (eta 0) unless a test names another
scheduler, FRAMES frames of 32x32, 3 denoising steps. `frames_per_batch` is the window size: each U-Net,
ControlNet and VAE-decoder call is evaluated that many frames at a time, in clip order, in one scheduler loop.
"""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

import cfa_diffusers_tiny as tiny
from cross_frame_attention import CrossFrameError, FrameRun
from cross_frame_diffusers.model_windows import HOOK_NAME

# Max |difference| relative to the output's max |value| (latents reach about 12 to 14 here). Measured on CPU
# fp32 (diffusers 0.42, torch 2.14): <= 2e-6 between paths that must agree, 0.04 to 0.2 per frame where the
# method acts.
TOL = 1e-4
FRAMES = 4
SEED = 3


def assert_untouched(pipe, before):
    """The U-Net has exactly the processors `before` again, no step hook, no windowed model calls, and no clip
    state is left."""
    after = pipe.unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before), "the U-Net's processors were not restored"
    assert not pipe.unet._forward_pre_hooks, "the step hook was left on the U-Net"
    for model in (pipe.unet, getattr(pipe, "controlnet", None)):
        if model is None:
            continue
        registry = getattr(model, "_diffusers_hook", None)
        assert registry is None or registry.get_hook(HOOK_NAME) is None, f"{type(model).__name__} is still windowed"
        assert getattr(model.forward, "__func__", None) is type(model).forward, f"{type(model).__name__}.forward"
    assert pipe.vae.use_slicing is False, "the VAE was left decoding frame by frame"
    assert pipe._cfa_clip is None


def batch_sizes(module):
    """Record the batch size of every call of `module` (a forward pre-hook); returns (list, hook handle)."""
    sizes = []
    handle = module.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    return sizes, handle


def assert_rejected(pipe, edit, clip, kwargs, match):
    """edit(pipe, clip, **kwargs) raises a CrossFrameError (a ValueError) matching `match`, U-Net untouched."""
    before = dict(pipe.unet.attn_processors)
    kwargs = dict(kwargs)
    fpb = kwargs.pop("frames_per_batch", 0)
    with pytest.raises(ValueError, match=match) as info:
        edit(pipe, clip, fpb, **kwargs)
    assert isinstance(info.value, CrossFrameError)
    assert_untouched(pipe, before)


class VideoPipelineContract:
    """Shared tests; a subclass named Test... in a test module sets these and gets them collected."""

    pipeline: type = None       # the cross-frame pipeline class under test
    stock: type = None          # its parent, the stock diffusers ControlNet img2img pipeline
    # after_images: what return_dict=False gives after the images ([None]: SD's nsfw flags without a checker)
    after_images: list = []

    @staticmethod
    def edit(pipe, clip, frames_per_batch=0, generator=None, **kwargs):
        """Run `pipe` on the clip (output_type "latent" and the clip's embeddings unless given) -> images."""
        raise NotImplementedError

    @staticmethod
    def plain_edit(parts, clip, guidance=None):
        """The stock pipeline over the whole clip as one batch, seed SEED, latents (guidance: its default)."""
        raise NotImplementedError

    @staticmethod
    def text_parts(tmp_path):
        """Tiny components with text encoders and tokenizers (files written into tmp_path)."""
        raise NotImplementedError

    # -- frame 0 is the stock pipeline's; later frames are the method's ------------------------------------------
    def test_frame_zero_is_the_stock_pipeline_and_later_frames_change(self, parts, clip, reference):
        out = self.edit(tiny.make(self.pipeline, parts), clip)
        plain = self.plain_edit(parts, clip)
        assert out.shape == (FRAMES, 4, tiny.SIZE // 2, tiny.SIZE // 2)
        assert tiny.rel_diff(out[:1], plain[:1]) <= TOL      # same noise and conditioning as the stock pipeline
        for i in range(1, FRAMES):
            assert tiny.rel_diff(out[i:i + 1], plain[i:i + 1]) > 3e-2   # later frames really attend elsewhere
        assert tiny.rel_diff(reference(), plain) > 3e-2      # the reference itself is not the plain pipeline

    # -- sequential equals batched -------------------------------------------------------------------------------
    @pytest.mark.parametrize("frames_per_batch", [0, 1, 2, 3])
    def test_equals_frame_by_frame_reference(self, parts, clip, reference, frames_per_batch):
        out = self.edit(tiny.make(self.pipeline, parts), clip, frames_per_batch)
        assert out.shape == (FRAMES, 4, tiny.SIZE // 2, tiny.SIZE // 2)
        assert tiny.rel_diff(out, reference()) <= TOL

    @pytest.mark.parametrize("frames_per_batch", [0, 1, 3])
    def test_anchor_every_equals_its_frame_by_frame_definition(self, parts, clip, reference, frames_per_batch):
        out = self.edit(tiny.make(self.pipeline, parts), clip, frames_per_batch, anchor_every=2)
        assert tiny.rel_diff(out, reference(anchor_every=2)) <= TOL
        assert tiny.rel_diff(out[:2], reference()[:2]) <= TOL           # frames before the first keyframe
        assert tiny.rel_diff(out[2:], reference()[2:]) > 1e-3           # keyframe 2 and after: anchored anew

    @pytest.mark.parametrize("scheduler", ["EulerAncestralDiscreteScheduler", "DPMSolverSDEScheduler"])
    def test_windows_equal_the_whole_clip_with_schedulers_that_draw_noise(self, parts, clip, scheduler):
        """One scheduler loop over the whole clip draws each step's noise once for every frame, so windows of
        any size give the whole clip's frames, ancestral and SDE schedulers included."""
        import diffusers
        extra = {}
        if scheduler == "DPMSolverSDEScheduler":
            pytest.importorskip("torchsde", reason="DPMSolverSDEScheduler needs torchsde (ComfyUI requires it)")
            extra = dict(noise_sampler_seed=SEED)   # else it seeds its Brownian tree from torch's global RNG
        scheduler = getattr(diffusers, scheduler).from_config(parts["scheduler"].config, **extra)
        parts = dict(parts, scheduler=scheduler)
        pipe = tiny.make(self.pipeline, parts)
        whole = self.edit(pipe, clip, 0)
        for size in (1, 2, 3):
            assert tiny.rel_diff(self.edit(pipe, clip, size), whole) <= TOL, f"windows of {size}"
        other_seed = self.edit(pipe, clip, 0, generator=torch.Generator().manual_seed(SEED + 1))
        assert tiny.rel_diff(other_seed, whole) > 1e-3       # the noise drawn matters

    def test_every_model_call_is_split_into_windows_in_clip_order(self, parts, clip, monkeypatch):
        pipe = tiny.make(self.pipeline, parts)
        seen = {name: batch_sizes(getattr(pipe, name).conv_in) for name in ("unet", "controlnet")}
        seen["vae"] = batch_sizes(pipe.vae.decoder.conv_in)
        frames_seen = []
        real_kv = FrameRun.kv

        def spy(run, layer, x, cond_or_uncond, sigma, ids=None, frames=None):
            frames_seen.append(frames)
            return real_kv(run, layer, x, cond_or_uncond, sigma, ids, frames)

        monkeypatch.setattr(FrameRun, "kv", spy)
        try:
            self.edit(pipe, clip, 3, output_type="pt")
        finally:
            for _, handle in seen.values():
                handle.remove()
        assert set(seen["unet"][0]) == {2 * 3, 2 * 1}       # CFG groups x windows of 3 and 1 frame
        assert set(seen["controlnet"][0]) == {2 * 3, 2 * 1}
        assert seen["vae"][0] == [1] * FRAMES                  # the windowed clip decodes frame by frame
        assert set(frames_seen) == {(0, 1, 2), (3,)}
        monkeypatch.undo()
        assert_untouched(pipe, dict(pipe.unet.attn_processors))

    def test_windows_compose_with_other_diffusers_hooks_and_keep_the_vae_setting(self, parts, clip, reference):
        """A diffusers hook already on the U-Net keeps running (once per window, inside ours) and stays after
        the call; a VAE the user set to sliced decoding stays sliced."""
        from diffusers.hooks import HookRegistry, ModelHook

        class Counting(ModelHook):
            def __init__(self):
                super().__init__()
                self.batches = []

            def pre_forward(self, module, *args, **kwargs):
                self.batches.append((args[0] if args else kwargs["sample"]).shape[0])
                return args, kwargs

        pipe = tiny.make(self.pipeline, parts)   # the parts are shared with other tests: put them back after
        theirs = Counting()
        registry = HookRegistry.check_if_exists_or_initialize(pipe.unet)
        registry.register_hook(theirs, "theirs")
        pipe.vae.enable_slicing()
        try:
            out = self.edit(pipe, clip, 3)
            assert registry.get_hook("theirs") is theirs and registry.get_hook(HOOK_NAME) is None
            assert pipe.vae.use_slicing is True
        finally:
            registry.remove_hook("theirs", recurse=False)
            pipe.vae.disable_slicing()
        assert tiny.rel_diff(out, reference()) <= TOL
        assert set(theirs.batches) == {2 * 3, 2 * 1}          # called per window: ours wraps theirs

    @pytest.mark.parametrize("frames_per_batch", [0, 2])
    def test_guidance_scale_one_equals_reference_without_cfg(self, parts, clip, reference, frames_per_batch):
        out = self.edit(tiny.make(self.pipeline, parts), clip, frames_per_batch, guidance_scale=1.0)
        assert tiny.rel_diff(out, reference(guidance=1.0)) <= TOL
        assert tiny.rel_diff(out, reference()) > 1e-3       # the guidance really changed something
        assert tiny.rel_diff(out[1:], self.plain_edit(parts, clip, guidance=1.0)[1:]) > 1e-2

    @pytest.mark.parametrize("frames_per_batch,options,expected", [
        (2, dict(blocks="input+middle+output"), dict(prefixes=("down_blocks", "mid_block", "up_blocks"))),
        (1, dict(blocks="input"), dict(prefixes=("down_blocks",))),
        (1, dict(anchors="first", include_self=True), dict(anchors="first", include_self=True)),
        (3, dict(anchors="previous"), dict(anchors="previous")),
        # percent 0.6 of the noise schedule is timestep 0.4 * 999: the step at 501 runs plain, 251 and 1 don't
        (1, dict(start_percent=0.6), dict(active=0.4 * 999)),
        (3, dict(start_percent=0.6, anchors="first", include_self=True),
         dict(active=0.4 * 999, anchors="first", include_self=True)),
    ], ids=["all-blocks", "input-blocks", "first+self", "previous", "start-percent", "start-percent+first+self"])
    def test_options_equal_reference(self, parts, clip, reference, frames_per_batch, options, expected):
        out = self.edit(tiny.make(self.pipeline, parts), clip, frames_per_batch, **options)
        assert tiny.rel_diff(out, reference(**expected)) <= TOL
        assert tiny.rel_diff(out, reference()) > 1e-3  # the option really changed something

    # -- processors: ours during the call only, restored after it (also on errors) -------------------------------
    @pytest.mark.parametrize("frames_per_batch,blocks,prefixes", [
        (0, "middle+output", ("mid_block", "up_blocks")),
        (2, None, ("up_blocks",)),
    ], ids=["middle+output-whole-clip", "default-blocks-windows-of-2"])
    def test_processors_are_ours_during_the_call_only(self, parts, clip, frames_per_batch, blocks, prefixes):
        pipe = tiny.make(self.pipeline, parts)
        before = dict(pipe.unet.attn_processors)
        seen = {}

        def spy(p, i, t, kwargs):
            seen[i] = {k: type(v).__name__ for k, v in p.unet.attn_processors.items()}
            return kwargs

        options = {} if blocks is None else dict(blocks=blocks)
        self.edit(pipe, clip, frames_per_batch, callback_on_step_end=spy, **options)
        ours = {k for k, v in seen[0].items() if v == "CrossFrameAttnProcessor"}
        assert ours == {k for k in before if ".attn1." in k and k.startswith(prefixes)}
        assert ours
        assert_untouched(pipe, before)

    def test_processors_restored_when_the_call_fails(self, parts, clip, reference):
        pipe = tiny.make(self.pipeline, parts)
        before = dict(pipe.unet.attn_processors)

        def boom(p, i, t, kwargs):
            if i == 1:
                raise RuntimeError("stop in the second step")
            return kwargs

        with pytest.raises(RuntimeError, match="second step"):
            self.edit(pipe, clip, 2, callback_on_step_end=boom)
        assert_untouched(pipe, before)
        assert tiny.rel_diff(self.edit(pipe, clip, 2), reference()) <= TOL  # and the next call is clean

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
        (dict(frames_per_batch=-1), "frames_per_batch is -1"),
        (dict(anchor_every=-2), "anchor_every=-2"),
        (dict(num_images_per_prompt=2), "num_images_per_prompt"),
        (dict(image=tiny.random_frames(1, seed=1)), "images="),
        (dict(control_image=tiny.random_frames(1, seed=1)), "images="),
        (dict(prompt="a cat"), "one of the two"),
        (dict(prompt_embeds=torch.zeros(3, tiny.TEXT_LEN, tiny.TEXT_DIM)), "3 rows for 4 frames"),
    ], ids=["empty", "none", "no-control", "control-count", "frame-sizes", "control-size", "generators", "blocks",
            "anchors", "frames-per-batch", "anchor-every", "images-per-prompt", "image-kwarg", "control-image-kwarg",
            "prompt-and-embeds", "embed-rows"])
    def test_bad_input_raises_a_clear_value_error(self, parts, clip, kwargs, match):
        assert_rejected(tiny.make(self.pipeline, parts), self.edit, clip, kwargs, match)

    # -- text prompts, output types ------------------------------------------------------------------------------
    def test_text_prompts_and_output_types(self, tmp_path, clip):
        pipe = tiny.make(self.pipeline, self.text_parts(tmp_path))
        common = dict(images=clip["frames"], control_images=clip["controls"], strength=tiny.STRENGTH,
                      num_inference_steps=tiny.STEPS, negative_prompt="blue dog")

        def run(**kw):
            return pipe(generator=torch.Generator().manual_seed(SEED), **common, **kw)

        pil = run(prompt="a photo of a red cat").images
        assert isinstance(pil, list) and len(pil) == FRAMES
        assert all(isinstance(im, PIL.Image.Image) and im.size == (tiny.SIZE, tiny.SIZE) for im in pil)
        whole = run(prompt="a photo of a red cat", output_type="np").images
        assert isinstance(whole, np.ndarray) and whole.shape == (FRAMES, tiny.SIZE, tiny.SIZE, 3)
        windowed, *rest = run(prompt="a photo of a red cat", output_type="np", frames_per_batch=3,
                              return_dict=False)
        assert rest == self.after_images
        assert np.abs(windowed - whole).max() <= 1e-4
        assert np.abs(np.asarray(pil[2], dtype=np.float32) / 255 - whole[2]).max() <= 1 / 255 + 1e-6
        pt = run(prompt="a photo of a red cat", output_type="pt", frames_per_batch=1).images
        assert pt.shape == (FRAMES, 3, tiny.SIZE, tiny.SIZE)
        assert np.abs(pt.permute(0, 2, 3, 1).numpy() - whole).max() <= 1e-4
        per_frame = run(prompt=["a red cat", "a red cat", "a blue dog", "a blue dog"], output_type="np",
                        frames_per_batch=2).images
        cat = run(prompt="a red cat", output_type="np").images
        assert np.abs(per_frame[:2] - cat[:2]).max() <= 1e-4
        assert np.abs(per_frame[2:] - cat[2:]).max() > 1e-3
        with pytest.raises(ValueError, match="3 prompts for 4 frames"):
            run(prompt=["a", "b", "c"])

    def test_loads_as_its_parent(self, parts):
        pipe = tiny.make(self.stock, parts)
        cross = self.pipeline.from_pipe(pipe)
        assert isinstance(cross, self.pipeline) and isinstance(cross, self.stock)
        assert cross.unet is pipe.unet and cross.controlnet is pipe.controlnet

"""The diffusers front end on the small model trained here (tests/fixtures/trained/): the same weights as in
ComfyUI, converted with diffusers' own LDM converter (U-Net) and renamed (TAESD -> AutoencoderTiny), edit a
held-out real clip. That the converted models compute what ComfyUI's do is checked in
tests/comfy/test_trained_quality.py, where ComfyUI is importable."""
from __future__ import annotations

import sys
from pathlib import Path

import needs_diffusers  # noqa: F401  (skips this module without diffusers)
import numpy as np
import PIL.Image
import pytest
import torch

FOOTAGE = Path(__file__).resolve().parents[1] / "footage"
if str(FOOTAGE) not in sys.path:
    sys.path.insert(0, str(FOOTAGE))

import cfa_footage  # noqa: E402
import cfa_quality  # noqa: E402
import cfa_trained_model  # noqa: E402
from cross_frame_diffusers import CrossFrameImg2ImgPipeline  # noqa: E402


@pytest.fixture(scope="module")
def frames():
    try:
        return cfa_quality.held_out_clip("tree", 3)
    except cfa_footage.FootageUnavailable as exc:
        pytest.skip(str(exc))


def edit(pipe, frames, cross_frame: bool):
    kwargs = dict(prompt_embeds=cfa_trained_model.empty_conditioning(), guidance_scale=1.0, strength=0.75,
                  num_inference_steps=8, generator=torch.Generator().manual_seed(0), output_type="np")
    images = [PIL.Image.fromarray(f) for f in frames]
    if cross_frame:
        out = pipe(images=images, **kwargs).images
    else:   # the parent pipeline, frame by frame with the same generator state: what diffusers does without us
        gen, out = kwargs.pop("generator"), []
        for image in images:
            out.append(super(CrossFrameImg2ImgPipeline, pipe).__call__(image=image, generator=gen, **kwargs).images[0])
    return (np.asarray(out) * 255).round().astype(np.uint8)


def test_trained_weights_edit_a_held_out_clip_in_the_diffusers_pipeline(frames):
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(beta_start=cfa_trained_model.LINEAR_START,
                                       beta_end=cfa_trained_model.LINEAR_END, beta_schedule="scaled_linear",
                                       num_train_timesteps=cfa_trained_model.TIMESTEPS, steps_offset=1)
    pipe = CrossFrameImg2ImgPipeline(vae=cfa_trained_model.diffusers_vae(), text_encoder=None, tokenizer=None,
                                     unet=cfa_trained_model.diffusers_unet(), scheduler=scheduler,
                                     safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ours = edit(pipe, frames, cross_frame=True)
    assert ours.shape == frames.shape
    # a real edit of the real frames (ComfyUI's plain edit of tree at this denoise: about 16 dB; random weights
    # or a wrong latent shift/scale land far below)
    assert cfa_quality.psnr(ours, frames) > 13.0
    # and cross-frame attention acts on frames 1.. (frame 0 has only itself to attend to)
    plain = edit(pipe, frames, cross_frame=False)
    assert np.abs(ours[0].astype(int) - plain[0]).max() <= 2
    assert np.abs(ours[1:].astype(int) - plain[1:]).mean() > 0.5

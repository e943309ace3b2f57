"""Batch Video Sampler's plumbing: hint batches checked up front, per-frame noise masks in windows (ControlNet
hints per window, interruption and per-frame conditioning: test_windows.py)."""
import pytest
import torch

from graph_helpers import rel_diff, video_sampler, with_hints


def test_hint_batch_of_another_length_is_an_error(comfy, tiny_model, conds, clip_latent, recording_control):
    control = recording_control([], "bad")
    control.set_cond_hint(torch.zeros(3, 3, 8, 8))
    with pytest.raises(ValueError, match="Batch Video Sampler: a ControlNet hint batch has 3 images but the "
                                         "clip has 5 frames"):
        video_sampler(comfy, tiny_model, (with_hints(conds[0], control), conds[1]), clip_latent,
                      frames_per_batch=2, steps=1)


def test_noise_mask_per_frame_follows_its_window(comfy, tiny_model, conds, clip_latent):
    mask = torch.zeros(5, 1, 16, 16)
    mask[:, :, :8] = 1.0              # only the top half of every frame is re-generated
    masked = {**clip_latent, "noise_mask": mask}
    one, _ = video_sampler(comfy, tiny_model, conds, masked, denoise=0.6)
    chunked, _ = video_sampler(comfy, tiny_model, conds, masked, denoise=0.6, frames_per_batch=2)
    assert rel_diff(chunked, one) <= 1e-4
    kept = (one["samples"][:, :, 8:] - clip_latent["samples"][:, :, 8:]).abs().max()
    assert kept < 1e-4                 # the unmasked half is the input
    assert one["noise_mask"] is mask   # the latent's other keys pass through like KSampler's

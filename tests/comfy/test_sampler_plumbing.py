"""Batch Video Sampler's plumbing: ControlNet hints per chunk, interruption, noise mask, progress."""
import pytest
import torch

from graph_helpers import ksampler, rel_diff, video_sampler


@pytest.fixture(scope="module")
def recording_control(comfy):
    import comfy.controlnet

    class RecordingControl(comfy.controlnet.ControlBase):
        """Adds nothing to the U-Net; records which hints each model call was given."""

        def __init__(self, log, name):
            super().__init__()
            self.log, self.name = log, name

        def copy(self):
            c = RecordingControl(self.log, self.name)
            self.copy_to(c)
            return c

        def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
            if self.previous_controlnet is not None:
                self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
            per_chunk = x_noisy.shape[0] // batched_number
            ids = comfy.controlnet.broadcast_image_to(self.cond_hint_original, per_chunk, 1)[:, 0, 0, 0]
            self.log.append((self.name, tuple(int(v) for v in ids)))
            return None

    return RecordingControl


def with_hints(conds, control):
    return [[t, {**extra, "control": control}] for t, extra in conds]


def test_each_chunk_sees_its_own_controlnet_hints(comfy, tiny_model, conds, clip_latent, recording_control):
    log = []
    hints = torch.arange(5, dtype=torch.float32)[:, None, None, None].expand(5, 3, 8, 8).contiguous()
    first = recording_control(log, "first")
    first.set_cond_hint(hints)
    second = recording_control(log, "second")  # a chained ControlNet (previous_controlnet link)
    second.set_cond_hint(hints + 10)
    second.set_previous_controlnet(first)
    pos, neg = with_hints(conds[0], second), with_hints(conds[1], second)
    video_sampler(comfy, tiny_model, (pos, neg), clip_latent, frames_per_batch=2, steps=1)
    seen = {name: sorted(set(ids for n, ids in log if n == name)) for name in ("first", "second")}
    assert seen["first"] == [(0, 1), (2, 3), (4,)]
    assert seen["second"] == [(10, 11), (12, 13), (14,)]
    assert hints.shape[0] == 5 and first.cond_hint_original.shape[0] == 5   # the user's objects untouched


def test_hint_batch_of_another_length_is_an_error(comfy, tiny_model, conds, clip_latent, recording_control):
    control = recording_control([], "bad")
    control.set_cond_hint(torch.zeros(3, 3, 8, 8))
    with pytest.raises(ValueError, match="Batch Video Sampler: a ControlNet hint batch has 3 images but the "
                                         "clip has 5 frames"):
        video_sampler(comfy, tiny_model, (with_hints(conds[0], control), conds[1]), clip_latent,
                      frames_per_batch=2, steps=1)


def test_interrupt_between_chunks_then_a_clean_rerun(comfy, tiny_model, conds, clip_latent, monkeypatch):
    mm = comfy.model_management
    from comfy import utils as comfy_utils
    from comfy.utils import set_progress_bar_global_hook

    # ComfyUI 0.30.0 throttles ProgressBar hook calls (at most one per PROGRESS_THROTTLE_MIN_INTERVAL = 0.1 s,
    # first and last always sent); on this tiny model steps take milliseconds, so step 2 would never reach
    # the hook. This test is about the sampler's own accounting (one bar over all chunks, Cancel between
    # chunks), so every update must be delivered: turn the throttle off where it exists (0.3.64 has none).
    if hasattr(comfy_utils, "PROGRESS_THROTTLE_MIN_INTERVAL"):
        monkeypatch.setattr(comfy_utils, "PROGRESS_THROTTLE_MIN_INTERVAL", 0.0)

    expected, _ = video_sampler(comfy, tiny_model, conds, clip_latent, frames_per_batch=2, steps=2)
    progress = []

    def hook(value, total, preview, node_id=None):
        progress.append((value, total))
        if value == 2:                 # the end of the first chunk: a user presses Cancel
            mm.interrupt_current_processing(True)

    set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            video_sampler(comfy, tiny_model, conds, clip_latent, frames_per_batch=2, steps=2)
    finally:
        set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert progress[-1] == (2, 6)       # one bar over all chunks and steps, stopped after chunk 0
    assert [v for v, _ in progress] == [1, 2], progress
    again, _ = video_sampler(comfy, tiny_model, conds, clip_latent, frames_per_batch=2, steps=2)
    assert torch.equal(again["samples"], expected["samples"])


def test_noise_mask_per_frame_is_sliced_with_its_chunk(comfy, tiny_model, conds, clip_latent):
    mask = torch.zeros(5, 1, 16, 16)
    mask[:, :, :8] = 1.0              # only the top half of every frame is re-generated
    masked = {**clip_latent, "noise_mask": mask}
    one, _ = video_sampler(comfy, tiny_model, conds, masked, denoise=0.6)
    chunked, _ = video_sampler(comfy, tiny_model, conds, masked, denoise=0.6, frames_per_batch=2)
    assert rel_diff(chunked, one) <= 1e-4
    kept = (one["samples"][:, :, 8:] - clip_latent["samples"][:, :, 8:]).abs().max()
    assert kept < 1e-4                 # the unmasked half is the input
    assert one["noise_mask"] is mask   # the latent's other keys pass through like KSampler's


def test_ancestral_sampler_runs_in_chunks(comfy, tiny_model, conds, clip_latent):
    """Ancestral samplers draw fresh noise per call: chunked differs from one batch (documented), but it
    runs and lands at the same output scale."""
    one, _ = video_sampler(comfy, tiny_model, conds, clip_latent, sampler_name="euler_ancestral")
    chunked, _ = video_sampler(comfy, tiny_model, conds, clip_latent, sampler_name="euler_ancestral",
                               frames_per_batch=2)
    assert one["samples"].shape == chunked["samples"].shape
    assert torch.isfinite(chunked["samples"]).all()
    assert rel_diff(chunked, one) > 1e-4
    ratio = float(chunked["samples"].abs().max() / one["samples"].abs().max())
    assert 0.5 < ratio < 2.0


def test_per_frame_conditioning_follows_its_chunk(comfy):
    """Inpainting concat inputs and per-frame cond masks with one entry per frame are cut with the chunk;
    single-entry ones (shared by all frames) and other entries pass through untouched."""
    import sys
    chunking = sys.modules[comfy.Sampler.__module__.rsplit(".", 1)[0] + ".chunk_conditioning"]
    per_frame = torch.arange(5.0)[:, None, None, None].expand(5, 4, 8, 8)
    cond = [[torch.zeros(1, 8, 32), {"concat_latent_image": per_frame, "mask": per_frame[:, 0],
                                     "concat_mask": torch.ones(1, 1, 8, 8), "strength": 0.7}]]
    out = chunking.conditioning_for_chunk(cond, 2, 4, 5, "Batch Video Sampler", {})
    extras = out[0][1]
    assert extras["concat_latent_image"][:, 0, 0, 0].tolist() == [2.0, 3.0]
    assert extras["mask"][:, 0, 0].tolist() == [2.0, 3.0]
    assert extras["concat_mask"].shape[0] == 1 and extras["strength"] == 0.7
    assert cond[0][1]["concat_latent_image"].shape[0] == 5          # the user's conditioning untouched

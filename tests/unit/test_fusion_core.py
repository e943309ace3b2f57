"""Flow-guided latent fusion (attention/fusion.py) on synthetic tensors: the exact invariants, the blend
against an independent grid_sample implementation, the resampling of pixel flow to the latent grid, and the
option checks."""
import copy

import pytest
import torch
import torch.nn.functional as F

from cross_frame_attention import CrossFrameError
from cross_frame_attention.fusion import (ClipFlow, FusionOptions, FusionRun, LatentFlow, latent_region,
                                          step_active, warp_latent)

T, C, H, W = 5, 4, 6, 7


def random_flow(frames=T, h=H, w=W, scale=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(frames, 2, h, w, generator=g) * scale


def clip_flow(flow, excess=None, first=None, first_excess=None, calls=None):
    excess = torch.zeros(flow.shape[0], 1, *flow.shape[2:]) if excess is None else excess

    def provider():
        if calls is not None:
            calls.append(1)
        return first, (torch.zeros_like(excess) if first_excess is None else first_excess)
    return ClipFlow(flow, excess, first_provider=provider if first is not None else None)


def latent_flow(flow, valid=1.0, first=None, first_valid=1.0, threshold=1.0):
    """A LatentFlow at factor 1 (pixel grid = latent grid), fully or partly trusted."""
    frames, _, h, w = flow.shape
    excess = torch.where(torch.as_tensor(valid) > 0.5, 0.0, float("inf")).expand(frames, 1, h, w)
    fexcess = None
    if first is not None:
        fexcess = torch.where(torch.as_tensor(first_valid) > 0.5, 0.0, float("inf")).expand(frames, 1, h, w)
    cf = clip_flow(flow, excess.contiguous(), first, None if fexcess is None else fexcess.contiguous())
    return cf.at_latent(h, w, threshold, first is not None, "test")


def grid_sample_warp(image, flow):
    """Independent reference: image [C, h, w] sampled at x + flow with torch's grid_sample (border clamp)."""
    _, h, w = image.shape
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    x = (gx + flow[0]) / (w - 1) * 2 - 1
    y = (gy + flow[1]) / (h - 1) * 2 - 1
    grid = torch.stack([x, y], dim=-1)[None]
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def test_warp_matches_grid_sample():
    image = torch.randn(C, H, W, generator=torch.Generator().manual_seed(1))
    flow = random_flow(1)[0]
    assert torch.allclose(warp_latent(image, flow), grid_sample_warp(image, flow), atol=1e-5)
    # The warp really moves things: an integer shift reads the neighbour.
    shift = torch.zeros(2, H, W)
    shift[0] = 1.0
    assert torch.equal(warp_latent(image, shift)[:, :, :-1], image[:, :, 1:])


def test_sequential_blend_matches_a_reference_loop():
    g = torch.Generator().manual_seed(2)
    denoised = torch.randn(T, C, H, W, generator=g)
    flow = random_flow()
    valid = (torch.rand(T, 1, H, W, generator=g) > 0.3).float()
    strength = 0.6
    out = FusionRun(latent_flow(flow, valid), strength, False).fuse(denoised)
    expected = [denoised[0]]
    for t in range(1, T):
        warped = grid_sample_warp(expected[t - 1], flow[t])
        m = valid[t]
        expected.append(m * ((1 - strength) * denoised[t] + strength * warped) + (1 - m) * denoised[t])
    assert torch.allclose(out, torch.stack(expected), atol=1e-5)
    assert (out - denoised).abs().max() > 0.1   # it did something
    assert torch.equal(out[0], denoised[0])


def test_previous_and_first_share_where_both_are_trusted():
    g = torch.Generator().manual_seed(3)
    denoised = torch.randn(T, C, H, W, generator=g)
    flow, first = random_flow(seed=4), random_flow(seed=5)
    out = FusionRun(latent_flow(flow, first=first), 1.0, True).fuse(denoised)
    for t in range(1, T):
        expected = 0.5 * (grid_sample_warp(out[t - 1], flow[t]) + grid_sample_warp(denoised[0], first[t]))
        assert torch.allclose(out[t], expected, atol=1e-5)


def test_strength_zero_returns_the_same_tensor():
    denoised = torch.randn(T, C, H, W)
    assert FusionRun(latent_flow(random_flow()), 0.0, False).fuse(denoised) is denoised


def test_frame_zero_and_untrusted_pixels_are_unchanged_bit_for_bit():
    denoised = torch.randn(T, C, H, W, generator=torch.Generator().manual_seed(6))
    out = FusionRun(latent_flow(random_flow(), valid=0.0), 1.0, False).fuse(denoised)
    assert torch.equal(out, denoised)


@pytest.mark.parametrize("with_first", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_zero_flow_identical_frames_are_unchanged_bit_for_bit(with_first, dtype):
    frame = torch.randn(1, C, H, W, generator=torch.Generator().manual_seed(7)).to(dtype)
    denoised = frame.expand(T, -1, -1, -1).contiguous()
    zero = torch.zeros(T, 2, H, W)
    flow = latent_flow(zero, first=zero if with_first else None)
    out = FusionRun(flow, 0.8, with_first).fuse(denoised)
    assert out.dtype == dtype and torch.equal(out, denoised)


def test_five_dimensional_latents_keep_their_shape():
    denoised = torch.randn(T, C, 1, H, W, generator=torch.Generator().manual_seed(8))
    flow = random_flow()
    out = FusionRun(latent_flow(flow), 0.5, False).fuse(denoised)
    flat = FusionRun(latent_flow(flow), 0.5, False).fuse(denoised[:, :, 0])
    assert out.shape == denoised.shape and torch.equal(out[:, :, 0], flat)


def test_pixel_flow_is_averaged_and_scaled_to_the_latent_grid():
    frames, factor, h, w = 3, 8, 4, 5
    flow = torch.zeros(frames, 2, h * factor, w * factor)
    flow[:, 0] = 8.0    # 8 px right = 1 latent pixel
    flow[:, 1] = -4.0   # 4 px up = half a latent pixel
    excess = torch.zeros(frames, 1, h * factor, w * factor)
    excess[:, :, :, :factor // 2] = float("inf")   # left half of the first latent column untrusted
    latent = ClipFlow(flow, excess).at_latent(h, w, 1.0, False, "test")
    assert latent.valid.reshape(frames, h, w)[:, :, 0].eq(0.5).all()
    assert latent.valid.reshape(frames, h, w)[:, :, 1:].eq(1.0).all()
    image = torch.arange(h * w, dtype=torch.float32).reshape(1, h, w)
    expected = warp_latent(image, torch.stack([torch.full((h, w), 1.0), torch.full((h, w), -0.5)]))
    out = (image.reshape(1, -1)[:, latent.index[1]] * latent.weight[1]).sum(1).reshape(1, h, w)
    assert torch.equal(out, expected)


def test_threshold_decides_what_is_trusted():
    flow = torch.zeros(2, 2, 8, 8)
    excess = torch.full((2, 1, 8, 8), 0.5)   # round-trip error ~0.7 px
    cf = ClipFlow(flow, excess)
    assert cf.at_latent(8, 8, 1.0, False, "t").valid.eq(1).all()
    assert cf.at_latent(8, 8, 0.5, False, "t").valid.eq(0).all()


def test_latent_region_allows_the_vae_crop_or_another_resolution_and_refuses_other_shapes():
    assert latent_region(512, 512, 64, 64, "who") == (slice(0, 512), slice(0, 512))
    assert latent_region(272, 644, 34, 80, "who") == (slice(0, 272), slice(2, 642))  # VAE Encode's centre crop
    assert latent_region(1024, 1024, 64, 64, "who") == (slice(0, 1024), slice(0, 1024))
    assert latent_region(720, 1280, 36, 64, "who") == (slice(0, 720), slice(0, 1280))  # 1280x720 for 512x288
    for pixel, latent in [((272, 640), (34, 64)), ((512, 512), (32, 64)), ((64, 96), (8, 8))]:
        with pytest.raises(CrossFrameError, match="who: the source frames are .* but the latent clip is .* "
                                                  "another aspect ratio"):
            latent_region(*pixel, *latent, "who")


def test_a_source_at_another_resolution_gives_the_same_latent_flow():
    frames, h, w = 2, 4, 6
    flow = torch.zeros(frames, 2, h * 8, w * 8)
    flow[:, 0], flow[:, 1] = 8.0, -4.0
    small = torch.nn.functional.interpolate(flow, scale_factor=0.5) * 0.5   # the same motion at half size
    a = ClipFlow(flow, torch.zeros(frames, 1, h * 8, w * 8)).at_latent(h, w, 1.0, False, "t")
    b = ClipFlow(small, torch.zeros(frames, 1, h * 4, w * 4)).at_latent(h, w, 1.0, False, "t")
    assert torch.equal(a.index, b.index) and torch.allclose(a.weight, b.weight)


def test_clip_flow_survives_deepcopy_and_computes_first_flows_once():
    calls = []
    cf = clip_flow(random_flow(), first=random_flow(seed=9), calls=calls)
    assert copy.deepcopy(cf) is cf
    cf.at_latent(H, W, 1.0, True, "t")
    cf.at_latent(H, W, 2.0, True, "t")
    cf.ensure_first()
    assert calls == [1]


def test_step_range():
    assert step_active(5.0, None)
    assert step_active(5.0, (10.0, 1.0)) and step_active(10.0, (10.0, 1.0)) and step_active(1.0, (10.0, 1.0))
    assert not step_active(10.5, (10.0, 1.0)) and not step_active(0.5, (10.0, 1.0))


@pytest.mark.parametrize("kw, message", [
    (dict(strength=1.5), "strength is 1.5"),
    (dict(start_percent=0.6, end_percent=0.4), "start_percent 0.6 and end_percent 0.4"),
    (dict(anchor="first"), "anchor='first'"),
    (dict(occlusion_threshold=0.0), "occlusion_threshold is 0.0"),
])
def test_options_are_checked(kw, message):
    with pytest.raises(CrossFrameError, match=f"Node X: {message}"):
        FusionOptions(who="Node X", **kw)
    assert FusionOptions().full_schedule and not FusionOptions(end_percent=0.5).full_schedule
    assert FusionOptions(anchor="previous+first").with_first


def test_latent_flow_moves_to_a_device():
    lf = latent_flow(random_flow())
    assert isinstance(lf, LatentFlow) and lf.to("cpu").index.device.type == "cpu"

"""Flow-guided latent fusion (the cross-frame latent fusion of Rerender-A-Video), torch only.

At every denoising step inside the chosen range, the sampler's denoised prediction of frame t is blended,
where the source clip's motion can be trusted, with the *fused* prediction of frame t-1 carried onto frame
t's grid along the source's optical flow (and, optionally, with frame 0's prediction carried along the flow
t <- 0):

    fused[0] = denoised[0]
    fused[t] = denoised[t] + s * (a_t * (warp(fused[t-1]) - denoised[t]) + b_t * (warp0(fused[0]) - denoised[t]))

with s the strength and a_t, b_t the share of each anchor where it is trusted (the fraction of the latent
pixel's source pixels that pass the forward-backward occlusion check; where both anchors are trusted they
share equally). Frames are fused in clip order, one after another, on the whole clip's prediction, so the
result does not depend on how the model evaluation was split into windows.

Exactness by construction (the tests rely on it): strength 0 or a step outside the range returns the very
tensor it was given; frame 0 is never changed; with zero flow the bilinear warp reads exactly one pixel with
weight 1, and the blend is written as a difference, so identical frames come out unchanged.

The ComfyUI glue is nodes/source_flow.py (flow of the source frames) and nodes/flow_fusion.py (the post-CFG
hook); the flow computation itself (OpenCV) is consistency/clip_flow.py.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .errors import CrossFrameError

ANCHOR_PREVIOUS = "previous"
ANCHOR_PREVIOUS_FIRST = "previous+first"
FUSION_ANCHORS = (ANCHOR_PREVIOUS, ANCHOR_PREVIOUS_FIRST)

FirstProvider = Callable[[], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class ClipFlow:
    """The source clip's backward flow at its own pixel resolution (what a CFA_FLOW carries).

    previous: [T, 2, H, W] float32, (x, y) in pixels: frame t[y, x] ~ frame t-1[y + f_y, x + f_x];
        frame 0's entry is unused.
    previous_excess: [T, 1, H, W] float32: the forward-backward round-trip error in squared pixels beyond
        its motion-dependent tolerance (+inf where the flow leaves the frame). A pixel is trusted where it is
        below occlusion_threshold ** 2, so the threshold is chosen when fusing, without a new flow.
    first / first_excess: the same towards frame 0. Computed on first use through `first_provider` (one more
        flow per frame), then kept.
    """
    previous: torch.Tensor
    previous_excess: torch.Tensor
    method: str = ""
    first: Optional[torch.Tensor] = None
    first_excess: Optional[torch.Tensor] = None
    first_provider: Optional[FirstProvider] = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _latent_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.previous.ndim != 4 or self.previous.shape[1] != 2:
            raise ValueError(f"flow must be [frames, 2, height, width], got {tuple(self.previous.shape)}")
        if self.previous_excess.shape != (self.frames, 1, self.height, self.width):
            raise ValueError(f"round-trip error {tuple(self.previous_excess.shape)} does not match the flow "
                             f"{tuple(self.previous.shape)}")

    # A ModelPatcher clone deep-copies its model options: the flow (read-only, possibly large) is shared.
    def __deepcopy__(self, memo):
        return self

    @property
    def frames(self) -> int:
        return self.previous.shape[0]

    @property
    def height(self) -> int:
        return self.previous.shape[2]

    @property
    def width(self) -> int:
        return self.previous.shape[3]

    def ensure_first(self) -> None:
        """Computes the flows towards frame 0 once (thread-safe)."""
        with self._lock:
            if self.first is not None:
                return
            if self.first_provider is None:
                raise CrossFrameError("this flow has no flows towards frame 0 and no way to compute them.")
            self.first, self.first_excess = self.first_provider()

    def trusted(self, excess: torch.Tensor, occlusion_threshold: float) -> torch.Tensor:
        return (excess < occlusion_threshold ** 2).float()

    def at_latent(self, height: int, width: int, occlusion_threshold: float, with_first: bool,
                  who: str) -> "LatentFlow":
        """The flow resampled onto a latent grid of height x width (cached per size and threshold)."""
        region = latent_region(self.height, self.width, height, width, who)
        key = (height, width, occlusion_threshold, with_first)
        with self._lock:
            cached = self._latent_cache.get(key)
        if cached is not None:
            return cached
        if with_first:
            self.ensure_first()
        prev = _to_latent_grid(self.previous, self.trusted(self.previous_excess, occlusion_threshold), region,
                               height, width)
        first = None
        if with_first:
            first = _to_latent_grid(self.first, self.trusted(self.first_excess, occlusion_threshold), region,
                                    height, width)
        result = LatentFlow(height, width, *prev, *(first or (None, None, None)))
        with self._lock:
            self._latent_cache[key] = result
        return result


def latent_region(pixel_h: int, pixel_w: int, latent_h: int, latent_w: int, who: str) -> tuple[slice, slice]:
    """The part of the source frames that the latent covers. Frames that VAE Encode turned into this latent
    (an integer factor, 8 for SD's VAE, less the few pixels it crops off a side that is not a multiple of
    it): the centre crop it kept. Otherwise the whole frame, if it has the latent's aspect ratio (within a
    latent pixel), e.g. the source at another resolution. Anything else is an error."""
    factor = pixel_h // latent_h if latent_h else 0
    if factor >= 1 and pixel_w // latent_w == factor and pixel_h - latent_h * factor < factor \
            and pixel_w - latent_w * factor < factor:
        top, left = (pixel_h - latent_h * factor) // 2, (pixel_w - latent_w * factor) // 2
        return slice(top, top + latent_h * factor), slice(left, left + latent_w * factor)
    if abs(pixel_w * latent_h / pixel_h - latent_w) <= 1:
        return slice(0, pixel_h), slice(0, pixel_w)
    raise CrossFrameError(
        f"{who}: the source frames are {pixel_w}x{pixel_h} pixels but the latent clip is {latent_w}x{latent_h} "
        f"(about {latent_w * 8}x{latent_h * 8} pixels with an SD VAE): another aspect ratio, so they do not "
        "correspond. Connect the same frames that were encoded into the latent (scale and crop them once, "
        "e.g. with 'Upscale Image', and feed that IMAGE to both VAE Encode and the fusion's source).")


def _to_latent_grid(flow: torch.Tensor, valid: torch.Tensor, region: tuple[slice, slice], height: int,
                    width: int):
    """Area-average the pixel flow and mask over each latent pixel's footprint in `region` and express the
    flow in latent pixels."""
    crop = (slice(None), slice(None), *region)
    flow, valid = flow[crop].float(), valid[crop].float()
    sy, sx = height / flow.shape[2], width / flow.shape[3]
    if flow.shape[2:] != (height, width):
        flow = F.adaptive_avg_pool2d(flow, (height, width))
        valid = F.adaptive_avg_pool2d(valid, (height, width))
    flow = flow * torch.tensor([sx, sy]).view(1, 2, 1, 1)
    return (*_bilinear_taps(flow), valid.reshape(valid.shape[0], 1, height * width))


def _bilinear_taps(flow: torch.Tensor):
    """For each frame and latent pixel, the 4 flat indices and bilinear weights of the position it samples
    (x + f_x, y + f_y), clamped to the frame's border. Integer positions get weights (1, 0, 0, 0) exactly."""
    frames, _, height, width = flow.shape
    gy, gx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    px = (gx + flow[:, 0]).clamp(0, width - 1)
    py = (gy + flow[:, 1]).clamp(0, height - 1)
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    index = torch.stack([y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1], dim=1)
    weight = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)
    return index.reshape(frames, 4, height * width), weight.reshape(frames, 4, height * width)


@dataclass
class LatentFlow:
    """Bilinear taps and trusted share of each latent pixel, per frame: [T, 4, h*w] indices and weights,
    [T, 1, h*w] validity (soft, 0..1). first_*: the same towards frame 0, or None."""
    height: int
    width: int
    index: torch.Tensor
    weight: torch.Tensor
    valid: torch.Tensor
    first_index: Optional[torch.Tensor] = None
    first_weight: Optional[torch.Tensor] = None
    first_valid: Optional[torch.Tensor] = None

    @property
    def frames(self) -> int:
        return self.index.shape[0]

    def coefficients(self, strength: float, with_first: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """s * a_t and s * b_t of the module docstring, [T, 1, h*w] (frame 0: zero)."""
        if not with_first:
            return strength * self.valid, None
        both = (self.valid + self.first_valid).clamp_min(1.0)
        return strength * self.valid / both, strength * self.first_valid / both

    def to(self, device) -> "LatentFlow":
        move = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return LatentFlow(**move)


def warp_gather(frame: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """frame [C, N] (N = h*w) sampled at the taps [4, N] -> [C, N]."""
    return (frame[:, index] * weight).sum(dim=1)


def warp_latent(latent: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """latent [C, h, w] sampled at x + flow(x) ([2, h, w], latent pixels), bilinear, border-clamped: the same
    warp the fusion applies, for tests and plots."""
    index, weight = _bilinear_taps(flow[None].float())
    c, h, w = latent.shape
    return warp_gather(latent.reshape(c, h * w).float(), index[0], weight[0]).reshape(c, h, w)


def step_active(sigma: float, bounds: Optional[tuple[float, float]]) -> bool:
    """bounds = (high, low) sigma of start/end percent (None: every step)."""
    return bounds is None or bounds[1] <= sigma <= bounds[0]


class FusionRun:
    """The fusion of one sampling run: the flow moved to the latent's device once, the coefficients of the
    strength computed once; `fuse` is called with each step's denoised prediction of the whole clip."""

    def __init__(self, flow: LatentFlow, strength: float, with_first: bool):
        self.flow, self.strength, self.with_first = flow, strength, with_first
        self._device = None
        self.fused_steps = 0

    def _on(self, device):
        if self._device != device:
            self.flow = self.flow.to(device)
            self.a, self.b = self.flow.coefficients(self.strength, self.with_first)
            self._device = device
        return self.flow

    def fuse(self, denoised: torch.Tensor) -> torch.Tensor:
        """denoised [T, C, h, w] (or [T, C, 1, h, w]) -> the fused prediction, same shape and dtype."""
        if self.strength == 0:
            return denoised
        frames = denoised.shape[0]
        flow = self._on(denoised.device)
        x = denoised.reshape(frames, denoised.shape[1], -1).float()
        a, b = self.a, self.b
        out = [x[0]]
        anchor = None
        if b is not None:
            # warp of frame 0's prediction onto every frame at once: [C, T*4*N] -> [T, C, N]
            taps = x[0][:, flow.first_index.reshape(-1)].reshape(x.shape[1], frames, 4, -1)
            anchor = (taps * flow.first_weight.unsqueeze(0)).sum(dim=2).transpose(0, 1)
        for t in range(1, frames):
            delta = a[t] * (warp_gather(out[t - 1], flow.index[t], flow.weight[t]) - x[t])
            if anchor is not None:
                delta = delta + b[t] * (anchor[t] - x[t])
            out.append(x[t] + delta)
        self.fused_steps += 1
        return torch.stack(out).to(denoised.dtype).reshape(denoised.shape)


DEFAULT_STRENGTH = 0.75
DEFAULT_OCCLUSION_THRESHOLD = 1.0


@dataclass(frozen=True)
class FusionOptions:
    """The user's choices, checked (a CrossFrameError naming `who` and the fix)."""
    strength: float = DEFAULT_STRENGTH
    start_percent: float = 0.0
    end_percent: float = 1.0
    anchor: str = ANCHOR_PREVIOUS
    occlusion_threshold: float = DEFAULT_OCCLUSION_THRESHOLD
    who: str = "Flow Guided Fusion"

    def __post_init__(self):
        who = self.who
        if not 0.0 <= self.strength <= 1.0:
            raise CrossFrameError(f"{who}: strength is {self.strength}; use 0 (off) to 1 (trusted pixels "
                                  "copied from the previous frame).")
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise CrossFrameError(f"{who}: start_percent {self.start_percent} and end_percent "
                                  f"{self.end_percent} must satisfy 0 <= start <= end <= 1.")
        if self.anchor not in FUSION_ANCHORS:
            raise CrossFrameError(f"{who}: anchor={self.anchor!r}; use one of {FUSION_ANCHORS}.")
        if not self.occlusion_threshold > 0:
            raise CrossFrameError(f"{who}: occlusion_threshold is {self.occlusion_threshold}; use a positive "
                                  "number of pixels (about 1).")

    @property
    def full_schedule(self) -> bool:
        return self.start_percent <= 0.0 and self.end_percent >= 1.0

    @property
    def with_first(self) -> bool:
        return self.anchor == ANCHOR_PREVIOUS_FIRST

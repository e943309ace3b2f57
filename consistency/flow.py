"""Optical flow between two RGB frames.

Convention everywhere in this package: `flow(target, reference)` returns an H x W x 2 float32 array `f` (x, y
in pixels) such that target[y, x] ~ reference[y + f[y, x, 1], x + f[y, x, 0]]. With target = frame t and
reference = frame t-1 this is the *backward* flow, which lets frame t-1 be sampled onto frame t's grid.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

FlowFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def to_gray(frame: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8 luma (Rec. 601 weights, the ones OpenCV uses)."""
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


class DisFlow:
    """OpenCV's DIS optical flow (Kroeger et al. 2016) on luma: weight-free, a few tens of ms per 512² pair.

    The medium preset is the one the reference figures in tests/consistency were measured with. One instance
    keeps one OpenCV object: not shared between threads.
    """
    name = "OpenCV DIS (medium)"

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM):
        self._dis = cv2.DISOpticalFlow_create(preset)

    def __call__(self, target: np.ndarray, reference: np.ndarray) -> np.ndarray:
        # Luma conversion costs well under 1 ms at 512², against tens of ms for the flow: no caching.
        return self._dis.calc(to_gray(target), to_gray(reference), None)


class RaftLikeFlow:
    """Flow from a torch module with torchvision RAFT's calling convention: `module(img1, img2)` with both
    images N x 3 x H x W in [-1, 1], H and W multiples of 8, returning a list of N x 2 x H x W flow estimates
    (the last is the best) from img1 to img2, i.e. img1(x) ~ img2(x + flow(x)) — our convention with
    img1 = target.

    Frames are padded (edge pixels repeated) to a multiple of 8, and to at least `min_side` (RAFT's
    correlation pyramid needs 128 px), rather than resized, so the flow stays in the frame's own pixel units;
    the padding is cropped off the result.
    """

    def __init__(self, module: torch.nn.Module, device: torch.device | str = "cpu", name: str = "RAFT",
                 min_side: int = 128):
        self.module = module
        self.device = torch.device(device)
        self.name = name
        self.min_side = min_side

    def _prepare(self, frame: np.ndarray) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device, torch.float32)
        image = image.permute(2, 0, 1)[None] / 127.5 - 1.0
        h, w = image.shape[-2:]
        pad_w, pad_h = max(w, self.min_side) - w, max(h, self.min_side) - h
        pad_w, pad_h = pad_w + (-(w + pad_w)) % 8, pad_h + (-(h + pad_h)) % 8
        return F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")

    @torch.no_grad()
    def __call__(self, target: np.ndarray, reference: np.ndarray) -> np.ndarray:
        h, w = target.shape[:2]
        estimates = self.module(self._prepare(target), self._prepare(reference))
        flow = estimates[-1] if isinstance(estimates, (list, tuple)) else estimates
        return flow[0, :, :h, :w].permute(1, 2, 0).float().cpu().numpy()

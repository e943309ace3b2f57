"""The backward flow of every frame of a clip towards its predecessor (or towards frame 0), with the
forward-backward round-trip error that tells occlusions, computed on all CPU cores.

OpenCV's DIS releases the GIL while it computes, so a thread pool scales with the cores; each thread keeps
its own DisFlow (one OpenCV object is not shared between threads). Used by the flow-guided fusion
(nodes/source_flow.py); the results are float32 torch tensors in the layout attention/fusion.py reads.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from .flow import DisFlow, FlowFunction
from .warp import Grid, round_trip_excess


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def clip_flows(frames: np.ndarray, pairs: Sequence[tuple[int, int]], workers: Optional[int] = None,
               flow_factory: Callable[[], FlowFunction] = DisFlow,
               on_pair: Optional[Callable[[], None]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """frames: T x H x W x 3 uint8. pairs: (target, reference) frame numbers. Returns the backward flows
    [T, 2, H, W] (target -> reference, in pixels) and round-trip excess [T, 1, H, W] (see round_trip_excess)
    at the targets; frames that are no pair's target get zero flow and +inf excess (never trusted).
    on_pair() is called in the calling thread after each pair (progress; an exception raised there stops the
    work)."""
    count, height, width = frames.shape[:3]
    # numpy, filled by the worker threads: they do not inherit the caller's torch inference mode, and torch
    # refuses in-place writes to tensors created under it (ComfyUI runs nodes in inference mode).
    flow = np.zeros((count, 2, height, width), np.float32)
    excess = np.full((count, 1, height, width), np.inf, np.float32)
    grid = Grid(height, width)
    local = threading.local()
    # OpenCV's own worker threads would compete with ours: one each while the pool runs.
    threads = cv2.getNumThreads()

    def one(pair):
        target, reference = pair
        estimator = getattr(local, "flow", None)
        if estimator is None:
            estimator = local.flow = flow_factory()
        backward = np.ascontiguousarray(estimator(frames[target], frames[reference]), dtype=np.float32)
        forward = np.ascontiguousarray(estimator(frames[reference], frames[target]), dtype=np.float32)
        flow[target] = backward.transpose(2, 0, 1)
        excess[target, 0] = round_trip_excess(backward, forward, grid)

    workers = min(workers or default_workers(), max(1, len(pairs)))
    if workers == 1:
        for pair in pairs:
            one(pair)
            if on_pair is not None:
                on_pair()
        return torch.from_numpy(flow), torch.from_numpy(excess)
    cv2.setNumThreads(1)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cfa-flow")
    try:
        # on_pair runs in the calling thread (ComfyUI's progress bar and interrupt check expect it); when it
        # raises, the pairs not started yet are dropped.
        for _ in pool.map(one, pairs):
            if on_pair is not None:
                on_pair()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(threads)
    return torch.from_numpy(flow), torch.from_numpy(excess)


def previous_pairs(count: int) -> list[tuple[int, int]]:
    return [(t, t - 1) for t in range(1, count)]


def first_pairs(count: int) -> list[tuple[int, int]]:
    return [(t, 0) for t in range(1, count)]

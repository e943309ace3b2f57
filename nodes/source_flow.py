"""Source Flow: the optical flow of the source frames, computed once per clip on all CPU cores, for Flow
Guided Fusion (a CFA_FLOW carrying attention/fusion.py's ClipFlow)."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import torch

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..attention import CrossFrameError
from ..attention.fusion import ClipFlow
from .measure_consistency import _measurement
from .schema import CATEGORY, FlowType

NAME = "Source Flow"
_CACHE: "OrderedDict[tuple, ClipFlow]" = OrderedDict()   # the last few clips' flows, by their pixels
_CACHE_SIZE = 2
_CACHE_LOCK = threading.Lock()


def check_source(images, who: str, what: str = "source") -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] < 3:
        raise CrossFrameError(f"{who}: {what} is not a batch of images; connect the source clip's IMAGE "
                              "frames (e.g. from Load Video / Get Video Components), in order.")
    if images.shape[0] < 2:
        raise CrossFrameError(f"{who}: {what} has {images.shape[0]} frame; flow needs a clip of at least 2 "
                              "frames (the same frames that were encoded into the latent clip).")
    return images[..., :3]


def _key(frames) -> tuple:
    return frames.shape, hashlib.blake2b(frames.tobytes(), digest_size=16).hexdigest()


def flow_of_frames(images: torch.Tensor, who: str) -> ClipFlow:
    """The backward flow of every frame to its predecessor (frames towards frame 0 on first use), from the
    cache when these very pixels were seen recently. Progress and Cancel go through ComfyUI."""
    measure = _measurement()
    from ..consistency.clip_flow import clip_flows, first_pairs, previous_pairs

    frames = measure.to_uint8_frames(check_source(images, who))
    key = _key(frames)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    count = frames.shape[0]
    progress = comfy.utils.ProgressBar(count - 1)
    comfy.model_management.throw_exception_if_processing_interrupted()

    def on_pair():
        progress.update(1)
        comfy.model_management.throw_exception_if_processing_interrupted()

    flow, excess = clip_flows(frames, previous_pairs(count), on_pair=on_pair)
    result = ClipFlow(flow, excess, method=measure.DisFlow.name,
                      first_provider=lambda: clip_flows(frames, first_pairs(count)))
    with _CACHE_LOCK:
        _CACHE[key] = result
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return result


class SourceFlow(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CFA_SourceFlow",
            display_name=NAME,
            category=CATEGORY,
            description="Optical flow of the source clip (OpenCV DIS, every CPU core), from each frame to the "
                        "one before it, with a forward-backward check that marks occluded pixels. Feed it to "
                        "Flow Guided Fusion. Computed once per clip and reused while the frames are the same.",
            inputs=[
                io.Image.Input("source", tooltip="The source clip's frames, in order, at the size they were "
                                                 "encoded into the latent clip (the same IMAGE that goes to "
                                                 "VAE Encode)."),
            ],
            outputs=[FlowType.Output(display_name="flow", tooltip="The clip's motion, for Flow Guided "
                                                                  "Fusion's flow input.")],
        )

    @classmethod
    def execute(cls, source) -> io.NodeOutput:
        return io.NodeOutput(flow_of_frames(source, NAME))

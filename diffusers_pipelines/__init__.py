"""The diffusers front end of the method, importable as `cross_frame_diffusers` (pyproject maps this folder to
that name): video pipelines and the attention processors under them, driven by the torch-only core
(`cross_frame_attention`, folder attention/), the same core the ComfyUI nodes (nodes/) drive.

    from cross_frame_diffusers import CrossFrameVideoPipeline, CrossFrameVideoXLPipeline

- pipeline.py: the pipelines (pipeline_sd.py for SD 1.x/2.x, pipeline_sdxl.py for SDXL, their shared clip
  loop in video_loop.py);
- processor.py and model_windows.py: the pieces for a loop of your own (docs/diffusers.md).

The pipelines are imported on first use, not with this package, so `cross_frame_diffusers.processor` loads
without diffusers' pipeline classes. Neither the core nor the ComfyUI node pack ever imports this package.
"""
from __future__ import annotations

import importlib

_FROM_PIPELINE = ("CrossFrameVideoPipeline", "CrossFrameImg2ImgPipeline", "CrossFrameVideoXLPipeline",
                  "timestep_bounds")

__all__ = list(_FROM_PIPELINE)


def __getattr__(name: str):
    if name in _FROM_PIPELINE:
        return getattr(importlib.import_module(".pipeline", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_FROM_PIPELINE))

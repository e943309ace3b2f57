"""Video editing pipelines for diffusers with cross-frame attention, driven by the same core as the nodes.

- `CrossFrameVideoPipeline`: SD 1.x/2.x ControlNet image-to-image (pipeline_sd.py);
- `CrossFrameImg2ImgPipeline`: SD 1.x/2.x image-to-image without ControlNet (pipeline_sd.py);
- `CrossFrameVideoXLPipeline`: SDXL ControlNet image-to-image (pipeline_sdxl.py).

Each edits a clip given as a list of frames: frame 0 with ordinary self-attention, every later frame with the
self-attention keys/values of the first and the previous frame (at the same layer and denoising step), which
keeps the edit's look consistent from frame to frame. See docs/how-it-works.md and docs/diffusers.md.

Why subclasses: they are the diffusers pipelines they extend (`from_pretrained`, `from_pipe`, schedulers,
offloading, LoRA loading, IP-Adapter and callbacks work unchanged), and the parent's own denoising loop runs
once for the whole clip. The loop around it (processors installed per call and restored after, the prompt
encoded once, the clip's noise drawn as the parent draws it for one batch, each model call split into windows)
is video_loop.py's, one implementation for all three.

Sequential equals batched: with the whole clip in one U-Net call (`frames_per_batch=0`) each frame reads its
anchors from the same call; in windows of k frames (`frames_per_batch=k`) each U-Net call is evaluated k frames
at a time in clip order and every window reads the frames before it from earlier windows of the same call.
One scheduler loop runs over the whole clip, so both give the same frames to float round-off with any scheduler,
ancestral and SDE ones included.
"""
from __future__ import annotations

from .pipeline_sd import CrossFrameImg2ImgPipeline, CrossFrameVideoPipeline
from .pipeline_sdxl import CrossFrameVideoXLPipeline
from .video_loop import timestep_bounds

__all__ = ["CrossFrameVideoPipeline", "CrossFrameImg2ImgPipeline", "CrossFrameVideoXLPipeline", "timestep_bounds"]

"""What every model family adapter provides, so that comfy_patch.py can stay family-agnostic.

A family adapter turns its model's self-attention hook call into one `FrameRun.kv` call ("these rows are
frames x conditionings, these are the image tokens, this is the layer") and the answer back into what the
hook expects. The same `transformer_options["patches"]["attn1_patch"]` key means something else per family
(U-Net: four positional arguments and a tuple; Flux/Qwen-Image: q/k/v keywords and a dict; Wan: a hook
after attention), so a patch is only ever registered on the family it was written for.
"""
from __future__ import annotations

import threading

from ..attention import FrameRun
from ..attention.errors import CrossFrameError
from ..attention.options import block_selector
from .windows import window_frames

# Where the DiT pre-attention hook is first known to exist (0.3.64, the previous tested release, lacks it).
DIT_HOOK_SINCE = "0.30.0"
SUPPORTED = ("SD1.x, SD2.x and SDXL U-Net checkpoints (any ComfyUI), and Flux.1 (and its fine-tunes, "
             f"Kontext included), Flux.2 and Qwen-Image on ComfyUI {DIT_HOOK_SINCE} or newer")


def comfyui_version() -> str:
    try:
        import comfyui_version as version_module  # the file at ComfyUI's root
        return str(version_module.__version__)
    except Exception:  # a checkout without the generated file
        return "unknown"


class CrossFramePatch:
    """Base of the pack's attn1_patch callables: the run slot the sampler wrapper fills, and the blocks.

    ModelPatcher.clone() deep-copies model options, patches included; returning self from __deepcopy__
    keeps one object (and one run) shared by every downstream clone, so STORE and LOAD never split.
    """

    def __init__(self, blocks: frozenset, who: str):
        self.blocks = frozenset(blocks)
        self.who = who
        self.selects = block_selector(self.blocks)
        self.run: FrameRun | None = None
        self._window = _WindowCache()

    def __deepcopy__(self, memo):
        return self

    def current_run(self) -> FrameRun:
        run = self.run
        if run is None:
            raise CrossFrameError(
                f"{self.who}: the patched model was evaluated outside a sampling run (no sampler wrapper "
                "ran). Sample it with KSampler, KSamplerAdvanced, SamplerCustom or Batch Video Sampler.")
        return run

    def window_frames(self, extra_options) -> tuple[int, ...] | None:
        """The clip frames this model call holds when the evaluation is split into context windows (core's
        or the pack's, both set `transformer_options["context_window"]`); None = the whole clip."""
        return self._window.frames(extra_options.get("context_window"))


class _WindowCache(threading.local):
    """The clip frames of the window a model call holds, worked out once per window object (every layer of
    the call gets the same one; per thread, as MultiGPU runs calls in parallel)."""

    def __init__(self):
        self.window = None
        self.value = None

    def frames(self, window):
        if window is None:
            return None
        if window is not self.window:
            self.window, self.value = window, window_frames(window)
        return self.value


class Family:
    """One model family: how to recognise it, its blocks, and the patch that serves it."""

    name = "model"
    patch_class = CrossFramePatch

    def matches(self, diffusion_model) -> bool:
        raise NotImplementedError

    def default_blocks(self, diffusion_model) -> frozenset:
        """What blocks='auto' means for this model."""
        raise NotImplementedError

    def check(self, model, blocks: frozenset, who: str) -> None:
        """Raise a CrossFrameError naming `who` and the fix unless a patched self-attention will run."""
        raise NotImplementedError

    def make_patch(self, blocks: frozenset, who: str) -> CrossFramePatch:
        return self.patch_class(blocks, who)

"""The ComfyUI side of the method: an attn1 patch plus an OUTER_SAMPLE wrapper, through the public patch API.

The patch (ModelPatcher.set_model_attn1_patch) rewrites the self-attention K/V source of the chosen blocks
and leaves the query alone, so it chains with other packs' attn1 patches and with any attn1 replace
(PAG, SAG), and uses whatever attention backend the user picked. The wrapper around each sampling run
tells the patch what that run is (STORE a reference, or sample frames against an anchor) and sets the run's
context-window handler (windows.py): the pack's own windows, or the user's bracketed.
"""
from __future__ import annotations

import threading
import weakref
from typing import Callable

import torch
from comfy.patcher_extension import WrappersMP

from ..attention import FrameRun, RunPlan
from ..attention.errors import CrossFrameError
from .windows import install_windows, prepare_sampling_wrapper, window_frames

WRAPPER_KEY = "cross_frame_attention"
_UNET_GROUPS = {"input": "input_blocks", "middle": "middle_block", "output": "output_blocks"}
_counts: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {blocks: count}


def self_attention_count(diffusion_model, blocks: frozenset) -> int:
    """Transformer blocks (each with one self-attention) that ComfyUI's attn1 patch reaches in `blocks`."""
    cached = _counts.setdefault(diffusion_model, {})
    if blocks not in cached:
        cached[blocks] = _count(diffusion_model, blocks)
    return cached[blocks]


def _count(diffusion_model, blocks: frozenset) -> int:
    from comfy.ldm.modules.attention import BasicTransformerBlock
    count = 0
    for group in blocks:
        part = getattr(diffusion_model, _UNET_GROUPS[group], None)
        if isinstance(part, torch.nn.Module):
            count += sum(isinstance(m, BasicTransformerBlock) for m in part.modules())
    return count


def check_supported(model, blocks: frozenset, who: str) -> None:
    """Refuse, rather than silently do nothing, where no patched self-attention would ever run: DiT models
    (Flux, SD3, Wan...) have no per-attention patch point, and some U-Nets have no transformer in a group."""
    diffusion_model = getattr(model, "diffusion_model", None)
    if diffusion_model is None or self_attention_count(diffusion_model, blocks) == 0:
        kind = type(diffusion_model).__name__ if diffusion_model is not None else type(model).__name__
        raise CrossFrameError(
            f"{who}: this model ({kind}) has no U-Net self-attention in the '{'+'.join(sorted(blocks))}' "
            "blocks, so cross-frame attention would change nothing. It supports SD1.x, SD2.x and SDXL "
            "U-Net checkpoints; for those, choose blocks that contain attention (the default 'output' does).")


class Attn1Patch:
    """Callable for ComfyUI's attn1_patch list.

    ModelPatcher.clone() deep-copies model options, patches included; returning self from __deepcopy__
    keeps one object (and one run) shared by every downstream clone, so STORE and LOAD never split.
    """

    def __init__(self, blocks: frozenset, who: str):
        self.blocks = frozenset(blocks)
        self.who = who
        self.run: FrameRun | None = None
        self._window = _WindowCache()

    def __deepcopy__(self, memo):
        return self

    def __call__(self, n, context, value, extra_options):
        block = extra_options.get("block")
        if block is None or block[0] not in self.blocks:
            return n, context, value
        run = self.run
        if run is None:
            raise CrossFrameError(
                f"{self.who}: the patched model was evaluated outside a sampling run (no sampler wrapper "
                "ran). Sample it with KSampler, KSamplerAdvanced, SamplerCustom or Batch Video Sampler.")
        layer = (block[0], block[1], extra_options.get("block_index", 0))
        # Another patch earlier in the chain may have changed the K/V source; build on what it set.
        source = n if context is None else context
        kv = run.kv(layer, source, extra_options["cond_or_uncond"], extra_options["sigmas"],
                    extra_options.get("uuids"), self._window.frames(extra_options.get("context_window")))
        if kv is None:
            return n, context, value
        if value is not None and value is not context:
            raise CrossFrameError(
                f"{self.who}: another attn1 patch earlier in the chain gave self-attention different key "
                "and value sources; cross-frame attention cannot combine with it. Apply this node before "
                "(upstream of) the other patch node, or remove one of them.")
        return n, kv, kv


class _WindowCache(threading.local):
    """The clip frames of the window a model call holds, worked out once per window object (every layer of
    the call gets the same one)."""

    def __init__(self):
        self.window = None
        self.value = None

    def frames(self, window):
        if window is None:
            return None
        if window is not self.window:
            self.window, self.value = window, window_frames(window)
        return self.value


PlanFactory = Callable[[object, object, object], RunPlan]
# ComfyUI's cond_or_uncond flags: calc_cond_batch gets [positive, negative] and tags each chunk by index.
_FLAG_OF = {"positive": 0, "negative": 1}


def conditioning_groups(guider) -> dict:
    """{cond uuid: (flag, index in its list)}: a conditioning keeps its group key whether ComfyUI batches it
    with others or calls it alone (memory, area sizes, hooks), and matches the reference's by position."""
    groups = {}
    for name, flag in _FLAG_OF.items():
        for index, cond in enumerate(getattr(guider, "conds", {}).get(name) or []):
            if isinstance(cond, dict) and "uuid" in cond:
                groups[cond["uuid"]] = (flag, index)
    return groups


def existing_patch(model) -> "Attn1Patch | None":
    patches = model.model_options.get("transformer_options", {}).get("patches", {}).get("attn1_patch", [])
    return next((p for p in patches if isinstance(p, Attn1Patch)), None)


def patch_model(model, blocks: frozenset, who: str, plan_for_run: PlanFactory,
                run_succeeded: Callable[[RunPlan, torch.Tensor], None] | None = None,
                window_size: int | None = None, run_finished: Callable[[FrameRun], None] | None = None):
    """A clone of `model` (never `model` itself) whose chosen self-attention layers follow the plan that
    `plan_for_run(guider, latent_image, sigmas)` returns at the start of each sampling run;
    `run_succeeded(plan, samples)` is called with the run's output latent when a run completes (not when it
    fails or is interrupted); `run_finished(run)` after every run.

    window_size: None = one batch, unless the user gave the model context windows; otherwise each model
    evaluation is split into windows of that many frames (0 = sized from free memory when sampling starts).
    Under any windows, frame i attends to frames 0 and i-1 as evaluated earlier in the same model evaluation
    (see attention/windows.py)."""
    earlier = existing_patch(model)
    if earlier is not None:
        raise CrossFrameError(
            f"{who}: the MODEL input already carries cross-frame attention from {earlier.who}. Connect the "
            f"original MODEL (from the checkpoint loader or LoRA chain) to {who}, not the output of "
            f"{earlier.who}.")
    patched = model.clone()
    patch = Attn1Patch(blocks, who)

    def outer_sample(executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        guider = executor.class_obj
        check_supported(guider.model_patcher.model, patch.blocks, who)
        plan = plan_for_run(guider, latent_image, sigmas)
        # Set in the run's own copy of the model options (the guider restores the originals afterwards).
        handler = install_windows(guider.model_options, patch, window_size, who)
        if handler is not None and not handler.is_ours:
            plan.keep_window = True   # a user's windows may overlap or prepend the frame before them
        run = FrameRun(plan, conditioning_groups(guider))
        patch.run = run
        try:
            out = executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        finally:
            patch.run = None  # banks stay with their owners; the run's caches go
            if handler is not None:
                handler.cleanup()
            if run_finished is not None:
                run_finished(run)
        if run_succeeded is not None:
            run_succeeded(plan, out)
        return out

    patched.set_model_attn1_patch(patch)
    patched.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample)
    patched.add_wrapper_with_key(WrappersMP.PREPARE_SAMPLING, WRAPPER_KEY, prepare_sampling_wrapper)
    return patched


def active_sigmas(model, options) -> tuple[float, float] | None:
    """(high, low) sigma bounds of start/end percent on this model's schedule; None when always active."""
    if options.full_schedule:
        return None
    sampling = model.get_model_object("model_sampling")
    return (float(sampling.percent_to_sigma(options.start_percent)),
            float(sampling.percent_to_sigma(options.end_percent)))

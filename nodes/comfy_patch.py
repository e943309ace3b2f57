"""The ComfyUI side of the method: the model family's patch plus an OUTER_SAMPLE wrapper, through the public
patch API.

The patch comes from the model's family (families/: a registry of declarations, each with its way into
self-attention); it rewrites the self-attention K/V of the chosen blocks and leaves the query alone, so it
chains with other packs' patches and uses whatever attention backend the user picked. The wrapper around each
sampling run tells the patch what that run is (STORE a reference, or sample frames against an anchor) and
sets the run's context-window handler (windows.py): the pack's own windows, or the user's bracketed.
"""
from __future__ import annotations

from typing import Callable

import torch
from comfy.patcher_extension import WrappersMP

from ..attention import FrameRun, RunPlan
from ..attention.errors import CrossFrameError
from .families import check_supported, family_of, installed_patch, resolve_blocks, supported_text  # noqa: F401
from .windows import install_windows, prepare_sampling_wrapper

WRAPPER_KEY = "cross_frame_attention"


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
    earlier = installed_patch(model)
    if earlier is not None:
        raise CrossFrameError(
            f"{who}: the MODEL input already carries cross-frame attention from {earlier.who}. Connect the "
            f"original MODEL (from the checkpoint loader or LoRA chain) to {who}, not the output of "
            f"{earlier.who}.")
    family = family_of(model.model)
    patched = model.clone()
    patch = family.make_patch(blocks, who)

    def outer_sample(executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        guider = executor.class_obj
        sampled = guider.model_patcher.model
        check_supported(sampled, patch.blocks, who)
        if family_of(sampled) is not family:
            raise CrossFrameError(f"{who}: the model sampled is a {family_of(sampled).name} model, but the "
                                  "patch was made for another family. Patch the model that is sampled.")
        plan = plan_for_run(guider, latent_image, sigmas)
        # Set in the run's own copy of the model options (the guider restores the originals afterwards).
        handler = install_windows(guider.model_options, patch, window_size, who, guider.model_patcher,
                                  int(latent_image.shape[0]))
        family.way.prepare_run(guider.model_options, patch)
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
        if not run.reached and len(sigmas) > 1:
            raise CrossFrameError(
                f"{who}: sampling finished without any self-attention of the chosen blocks "
                f"('{'+'.join(sorted(patch.blocks))}') calling the pack's patch, so cross-frame attention changed "
                f"nothing on this {family.name} model. Either this ComfyUI build's blocks do not call the "
                f"attention patch (supported: {supported_text()}), or another node upstream of the sampler removes "
                "model patches; sample the patched model without that node.")
        if run_succeeded is not None:
            run_succeeded(plan, out)
        return out

    family.way.install(patched, patch)
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

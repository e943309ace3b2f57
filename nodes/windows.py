"""One sampler pass over the whole clip, each model evaluation split into windows of frames in clip order,
through ComfyUI's context-window mechanism (`model_options["context_handler"]`).

Two handlers, both set for one sampling run only (in the run's own copy of the model options):
- ClipWindows, ours: consecutive windows of the clip evaluated one after another, their outputs put in
  place (no fusing: windows do not overlap). It gives each window its own slice of everything per-frame in
  the conditioning, ControlNet hints included (core's handler leaves hints whole, so a window of frames 8..15
  would be guided by the hints of frames 0..7).
- UserWindows: wraps a context handler the user set (core's "Context Windows (Manual)") so that cross-frame
  attention knows where each model evaluation starts and ends; the user's handler does the rest.
Cross-frame attention reads the window from `transformer_options["context_window"]` (see
CrossFramePatch.window_frames in families/base.py).
"""
from __future__ import annotations

import logging

import torch

import comfy.context_windows
import comfy.model_management

from ..attention import CrossFrameError
from ..attention.windows import largest_window, window_bounds
from .animatediff_guard import refuse_windows_under_animatediff
from .window_controls import check_hint_batch, slice_control

log = logging.getLogger("CrossFrameAttention")
GiB = 2 ** 30
# Schedules of core's IndexListContextHandler whose windows are not taken in clip order.
_OUT_OF_ORDER = {"looped_uniform": "wraps the clip's end onto its start",
                 "standard_uniform": "starts each step's windows at a different frame, so a window is "
                                     "evaluated before the frames just before it"}


class FrameWindow(comfy.context_windows.ContextWindowABC):
    """Clip frames start..stop-1, as core's windows expose them (`index_list`, `context_length`, `dim`)."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = start, stop
        self.index_list = list(range(start, stop))
        self.context_length = stop - start
        self.dim = 0

    def get_tensor(self, full: torch.Tensor, device=None, dim=None) -> torch.Tensor:
        dim = self.dim if dim is None else dim
        return full.narrow(dim, self.start, self.context_length).to(device)

    def add_window(self, full: torch.Tensor, to_add: torch.Tensor, dim=None) -> torch.Tensor:
        dim = self.dim if dim is None else dim
        full.narrow(dim, self.start, self.context_length).add_(to_add)
        return full


def _per_frame(value, n_frames: int) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == n_frames


def window_frames(window) -> tuple[int, ...]:
    """The clip frames a window's model call holds, in batch order. Core's 0.30+ handler may put the frame
    before the window first (`causal_anchor_index`, its causal_window_fix): that frame is batch frame 0."""
    frames = tuple(int(i) for i in window.index_list)
    before = getattr(window, "causal_anchor_index", None)
    if before is not None and before >= 0:
        frames = (int(before),) + frames
    return frames


class WindowConditioning:
    """Cuts a conditioning list to a window of frames: every entry with one item per clip frame (masks,
    concat latents, per-frame model conds, ControlNet hints) becomes the window's; the rest is shared.
    Sliced ControlNet chains are made once per window and run, so their prepared hints are reused."""

    def __init__(self, who: str):
        self.who = who
        self._controls: dict[tuple, object] = {}   # (id of a control chain, start, stop) -> sliced copy
        self._keep_alive: list = []                 # the originals, so their ids stay theirs for the run

    def cut(self, cond_in, n_frames: int, start: int, stop: int, model, device=None):
        if cond_in is None:
            return None
        out = []
        for cond in cond_in:
            resized = cond.copy()
            for key, value in cond.items():
                if _per_frame(value, n_frames):
                    resized[key] = value[start:stop].to(device)
                elif key == "model_conds" and isinstance(value, dict):
                    resized[key] = {k: (c._copy_with(c.cond[start:stop].to(device))
                                        if _per_frame(getattr(c, "cond", None), n_frames) else c)
                                    for k, c in value.items()}
                elif key == "control" and value is not None:
                    resized[key] = self._control(value, n_frames, start, stop, model)
            out.append(resized)
        return out

    def _control(self, control, n_frames: int, start: int, stop: int, model):
        key = (id(control), start, stop)
        sliced = self._controls.get(key)
        if sliced is None:
            check_hint_batch(control, n_frames, self.who)
            sliced = slice_control(control, start, stop, n_frames, self.who, {})
            if model is not None:   # the copies start where core's pre-run left the originals
                sampling = model.model_sampling
                sliced.pre_run(model, lambda percent: sampling.percent_to_sigma(percent))
            self._controls[key] = sliced
            self._keep_alive.append(control)
        return sliced

    def cleanup(self) -> None:
        """After the run: the sliced ControlNet copies drop their prepared hints."""
        for sliced in self._controls.values():
            sliced.cleanup()
        self._controls.clear()
        self._keep_alive.clear()


class ClipWindows(comfy.context_windows.ContextHandlerABC):
    """The pack's windows: `size` frames at a time (0 = chosen from free memory when sampling starts),
    consecutive and in clip order, their outputs put in place (they do not overlap: nothing to fuse)."""

    is_ours = True

    def __init__(self, patch, size: int, who: str):
        super().__init__()
        self.patch = patch          # the CrossFramePatch whose run the windows belong to
        self.size = size
        self.who = who
        self.dim = 0
        self._windows: dict[int, list[FrameWindow]] = {}
        self.conditioning = WindowConditioning(who)
        self._model = None

    def __deepcopy__(self, memo):
        return self   # one run, one handler, whatever clones the model options

    @property
    def context_length(self) -> int:   # read by code that budgets memory per window
        return self.size

    def resolve_size(self, model_patcher, noise_shape) -> int:
        """Fix the window size for this run: the explicit one, or from memory (once, before loading)."""
        n = int(noise_shape[0])
        if self.size > 0:
            self.size = min(self.size, n)
            log.info("%s: %d frames in windows of %d (frames_per_batch).", self.who, n, self.size)
            return self.size
        self.size, note = auto_window(model_patcher, noise_shape)
        if self.size >= n:
            log.info("%s: %d frames in one batch (%s).", self.who, n, note)
        else:
            log.info("%s: %d frames in windows of %d (%s).", self.who, n, self.size, note)
        return self.size

    def windows(self, n_frames: int) -> list[FrameWindow]:
        found = self._windows.get(n_frames)
        if found is None:
            found = [FrameWindow(s, e) for s, e in window_bounds(n_frames, self.size)]
            self._windows[n_frames] = found
        return found

    def should_use_context(self, model, conds, x_in, timestep, model_options) -> bool:
        return 0 < self.size < x_in.shape[0]

    def get_resized_cond(self, cond_in, x_in, window, device=None):
        return self.conditioning.cut(cond_in, x_in.shape[0], window.start, window.stop, self._model, device)

    def execute(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        run = self.patch.run
        n = x_in.shape[0]
        refuse_windows_under_animatediff(
            model_options, n, f"frames_per_batch windows of {self.size}",
            f"Set frames_per_batch to {n} or more, so {self.who} samples the whole clip in one batch (0 = auto "
            "picks windows when the clip does not fit in free memory).", self.who)
        self._model = model
        per_frame_t = _per_frame(timestep, n)
        outs = [torch.empty_like(x_in) for _ in conds]
        options = model_options.setdefault("transformer_options", {})
        before = options.get("context_window")
        run.begin_evaluation()
        try:
            for window in self.windows(n):
                # Cancel takes effect between windows (core's own handler does the same).
                comfy.model_management.throw_exception_if_processing_interrupted()
                options["context_window"] = window
                sub_conds = [self.conditioning.cut(c, n, window.start, window.stop, model) for c in conds]
                part_t = window.get_tensor(timestep) if per_frame_t else timestep
                parts = calc_cond_batch(model, sub_conds, window.get_tensor(x_in), part_t, model_options)
                for out, part in zip(outs, parts):
                    out[window.start:window.stop] = part
        finally:
            run.end_evaluation()
            if before is None:
                options.pop("context_window", None)
            else:
                options["context_window"] = before
        return outs

    def cleanup(self) -> None:
        self.conditioning.cleanup()


class UserWindows(comfy.context_windows.ContextHandlerABC):
    """A user's context handler, bracketed so cross-frame attention knows each model evaluation's extent.
    Everything else (which windows, conditioning per window, fusing) is the user's handler's."""

    is_ours = False

    def __init__(self, inner, patch, who: str):
        super().__init__()
        self.inner = inner
        self.patch = patch
        self.conditioning = WindowConditioning(who)

    def __deepcopy__(self, memo):
        return self

    def __getattr__(self, name):   # context_length, dim, callbacks...: the user's handler's
        if name in ("inner", "patch", "conditioning"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def should_use_context(self, model, conds, x_in, timestep, model_options) -> bool:
        return self.inner.should_use_context(model, conds, x_in, timestep, model_options)

    def get_resized_cond(self, cond_in, x_in, window, device=None):
        return self.inner.get_resized_cond(cond_in, x_in, window, device)

    def execute(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        run = self.patch.run
        n = x_in.shape[0]

        def per_window(model_, sub_conds, sub_x, sub_t, options):
            # Core's handler leaves ControlNet chains (and, on 0.3.64, per-frame model conds) whole: cut
            # what is still one-per-clip-frame to the frames this window's call holds.
            frames = window_frames(options["transformer_options"]["context_window"])
            start, stop = frames[0], frames[0] + len(frames)
            if frames == tuple(range(start, stop)):
                sub_conds = [self.conditioning.cut(c, n, start, stop, model_) for c in sub_conds]
            return calc_cond_batch(model_, sub_conds, sub_x, sub_t, options)

        refuse_windows_under_animatediff(
            model_options, n, "the model's Context Windows (Manual)",
            "Remove Context Windows (Manual) from the model, so the clip is sampled in one batch.",
            self.conditioning.who)
        self._check_step_lookup(timestep, model_options)
        run.begin_evaluation()
        try:
            return self.inner.execute(per_window, model, conds, x_in, timestep, model_options)
        finally:
            run.end_evaluation()

    def _check_step_lookup(self, timestep, model_options) -> None:
        """ComfyUI 0.3.64's handler finds the step by comparing the call's per-image sigmas with the whole
        schedule, which fails for an image batch whose length is neither 1 nor the schedule's (later
        releases compare one sigma). Say so instead of letting a tensor-size error surface mid-sampling."""
        set_step = getattr(self.inner, "set_step", None)
        if set_step is None:
            return
        try:
            set_step(timestep, model_options)
        except RuntimeError as error:   # the per-image sigmas against the schedule: a size mismatch
            schedule = model_options.get("transformer_options", {}).get("sample_sigmas")
            steps = len(schedule) - 1 if schedule is not None else "?"
            raise CrossFrameError(
                f"{self.conditioning.who}: this ComfyUI's Context Windows (Manual) cannot sample a batch of "
                f"{timestep.shape[0]} images with {steps} steps (its step lookup needs the batch to hold 1 image "
                "or steps + 1 images; fixed in later ComfyUI releases). Use Batch Video Sampler's "
                f"frames_per_batch for windows, or update ComfyUI. ({error})") from error
        except Exception as error:   # 0.3.64 raises a bare Exception for a sigma between two steps
            raise CrossFrameError(
                f"{self.conditioning.who}: this ComfyUI's Context Windows (Manual) cannot evaluate the model "
                f"at sigma {float(timestep.reshape(-1)[0]):.4g}, which lies between two steps of the schedule "
                "(samplers such as dpmpp_sde and dpm_2 do that; fixed in later ComfyUI releases). Use Batch "
                f"Video Sampler's frames_per_batch for windows, another sampler, or update ComfyUI. ({error})"
            ) from error

    def cleanup(self) -> None:
        self.conditioning.cleanup()


def check_user_windows(handler, who: str, frame_dim: int = 0, frames_along: str = "image models batch a clip's "
                       "frames along dimension 0", needs: str = "Cross-frame attention needs each window's previous "
                       "frame evaluated before it in the same step") -> None:
    """Refuse, before sampling, user context schedules whose windows are not in clip order, or that split
    another dimension than the one the model's frames lie along (`frame_dim`)."""
    schedule = getattr(getattr(handler, "context_schedule", None), "name", None)
    if schedule in _OUT_OF_ORDER:
        raise CrossFrameError(
            f"{who}: the model's context windows use the '{schedule}' schedule, which "
            f"{_OUT_OF_ORDER[schedule]}. {needs}: set context_schedule to 'batched' or 'standard_static' on "
            "Context Windows (Manual).")
    dim = getattr(handler, "dim", frame_dim)
    if dim != frame_dim:
        raise CrossFrameError(
            f"{who}: the model's context windows split dimension {dim}; {frames_along}. Set dim to {frame_dim} "
            "on Context Windows (Manual).")


def install_windows(model_options: dict, patch, window_size: int | None, who: str):
    """Set this run's context handler in the run's own model options; returns it (or None)."""
    user = model_options.get("context_handler")
    if isinstance(user, (ClipWindows, UserWindows)):
        user = user.inner if isinstance(user, UserWindows) else None
    if user is not None:
        if window_size:
            raise CrossFrameError(
                f"{who}: the model already has context windows (Context Windows (Manual)) and "
                f"frames_per_batch is {window_size}. Use one of them: set frames_per_batch to 0 to sample in "
                "the model's context windows, or remove the context-window node.")
        check_user_windows(user, who)
        handler = UserWindows(user, patch, who)
    elif window_size is not None:
        handler = ClipWindows(patch, window_size, who)
    else:
        return None
    model_options["context_handler"] = handler
    return handler


def auto_window(model_patcher, noise_shape) -> tuple[int, str]:
    """The largest window whose cond+uncond batch fits the memory ComfyUI reports free, by ComfyUI's own
    estimate of what a batch needs (with the margin it uses itself when it batches conds)."""
    n = int(noise_shape[0])
    device = model_patcher.load_device
    free = comfy.model_management.get_free_memory(device)
    weights_to_load = max(0, model_patcher.model_size() - model_patcher.loaded_size())
    budget = free - weights_to_load - comfy.model_management.minimum_inference_memory()
    shape = list(noise_shape[1:])

    def need(k: int) -> float:
        return model_patcher.model.memory_required([2 * k] + shape) * 1.5

    size = largest_window(n, lambda k: need(k) <= budget)
    note = (f"auto: {free / GiB:.1f} GiB free on {device}, {weights_to_load / GiB:.1f} GiB of weights to load; "
            f"{size} frame(s) need about {need(size) / GiB:.1f} GiB")
    return size, note


def prepare_sampling_wrapper(executor, model, noise_shape, *args, **kwargs):
    """PREPARE_SAMPLING: with windows, ComfyUI budgets memory for one window, not the whole clip (else it
    would offload the weights of a model that fits beside one window)."""
    handler = (kwargs.get("model_options") or {}).get("context_handler")
    if isinstance(handler, ClipWindows):
        size = handler.resolve_size(model, noise_shape)
        noise_shape = [min(int(noise_shape[0]), size)] + list(noise_shape[1:])
    return executor(model, noise_shape, *args, **kwargs)

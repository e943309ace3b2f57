"""One pipeline call over the whole clip, each model call of it split into windows of frames in clip order.

The parent pipeline's denoising loop runs once for the whole clip (one scheduler, so noise that a scheduler draws
per step, ancestral or SDE, is drawn once for every frame). Its U-Net and ControlNet calls get the whole clip's
batch: [groups * frames] images, group-major (diffusers' CFG batch is [uncond frames; cond frames]). While the
call runs, a diffusers model hook (diffusers.hooks, the mechanism diffusers' own caching and offloading hooks
use; removed when the call ends, also on errors) evaluates each such call a window of frames at a time, every
group's rows of the window together, and puts the outputs back in place. Everything with one row per image is
cut to the window (latents, timesteps given per image, prompt and pooled embeddings, size conditioning,
ControlNet images and residuals, IP-Adapter embeddings); everything else is passed whole. The VAE decodes the
windowed clip one frame at a time through its own public switch (`enable_slicing`), put back as it was after.

Cross-frame attention inside a windowed U-Net call: before each window the processors' context learns the
clip frames the call holds (`on_window`), and the run is told where the model evaluation starts and ends;
FrameRun's window carry hands each window the frame before it and the clip's anchor from earlier windows of the
same evaluation (attention/windows.py), so any window size gives the whole clip's result.
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers.hooks import HookRegistry, ModelHook

from cross_frame_attention.errors import CrossFrameError
from cross_frame_attention.windows import window_bounds


def cut_rows(value, images: int, groups: int, start: int, stop: int):
    """`value` with every tensor of `images` (= groups * frames) rows cut to frames start..stop-1 of each group
    (group-major), through lists, tuples and dicts; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0 or value.shape[0] != images:
            return value
        frames = images // groups
        if groups == 1:
            return value[start:stop]
        return torch.cat([value[g * frames + start:g * frames + stop] for g in range(groups)])
    if isinstance(value, (list, tuple)):
        return type(value)(cut_rows(v, images, groups, start, stop) for v in value)
    if isinstance(value, dict):
        return {k: cut_rows(v, images, groups, start, stop) for k, v in value.items()}
    return value


def join_rows(parts: list, bounds: list, groups: int, frames: int, who: str):
    """The outputs of the windows `bounds` put together as the whole call's: every tensor [groups * window, ...]
    goes to its rows of a [groups * frames, ...] tensor; tuples, lists and diffusers' output classes (dicts)
    are rebuilt around them."""
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        out = first.new_empty((groups * frames,) + tuple(first.shape[1:]))
        for part, (start, stop) in zip(parts, bounds):
            size = stop - start
            if part.shape[0] != groups * size:
                raise CrossFrameError(f"{who}: a model returned {part.shape[0]} rows for a window of {size} "
                                      f"frames x {groups} group(s); it cannot be evaluated in windows of frames.")
            for g in range(groups):
                out[g * frames + start:g * frames + stop] = part[g * size:(g + 1) * size]
        return out
    if isinstance(first, dict):   # BaseOutput (UNet2DConditionOutput, ControlNetOutput, DecoderOutput, ...)
        return type(first)(**{k: join_rows([p[k] for p in parts], bounds, groups, frames, who) for k in first})
    if isinstance(first, (list, tuple)):
        return type(first)(join_rows([p[i] for p in parts], bounds, groups, frames, who)
                           for i in range(len(first)))
    raise CrossFrameError(f"{who}: a model returned {type(first).__name__}, which cannot be joined per window.")


HOOK_NAME = "cross_frame_attention_windows"


class CallWindows:
    """For one pipeline call over `frames` frames: splits the calls of the models given to `split` into windows
    of `size` frames (0 or the clip or more: one call, nothing changed). `undo()` puts the models back."""

    def __init__(self, frames: int, size: int, who: str):
        self.frames, self.who = frames, who
        self.bounds = window_bounds(frames, size)
        self._undo: list[Callable[[], None]] = []

    @property
    def windowed(self) -> bool:
        return len(self.bounds) > 1

    def split(self, module: torch.nn.Module, first_arg: str = "sample",
              on_window: Callable[[tuple | None], None] | None = None) -> None:
        """Evaluate `module`'s forward window by window while the call runs.

        first_arg: the name of the batch argument when it is passed by keyword. on_window: called with the clip
        frames of each window before it runs, and with None once the evaluation's windows are done (also when
        one fails): the start and end of one model evaluation split into windows."""
        if not self.windowed:
            return
        registry = HookRegistry.check_if_exists_or_initialize(module)
        registry.register_hook(_WindowedForward(self, first_arg, on_window), HOOK_NAME)
        self._undo.append(lambda: registry.remove_hook(HOOK_NAME, recurse=False))

    def decode_frame_by_frame(self, vae) -> None:
        """A windowed clip's VAE decode one frame at a time (never the whole clip at once)."""
        if not self.windowed or getattr(vae, "use_slicing", None) is None:
            return
        was = vae.use_slicing
        vae.enable_slicing()
        self._undo.append(vae.enable_slicing if was else vae.disable_slicing)

    def run(self, forward: Callable, args: tuple, kwargs: dict, first_arg: str, on_window) -> object:
        """One model call, evaluated window by window and put back together."""
        frames, who = self.frames, self.who
        batch = args[0] if args else kwargs.get(first_arg)
        if not isinstance(batch, torch.Tensor) or batch.shape[0] % frames:
            raise CrossFrameError(
                f"{who}: a model call holds {getattr(batch, 'shape', ['?'])[0]} images, not a multiple of "
                f"the clip's {frames} frames, so it cannot be split into windows of frames.")
        images = batch.shape[0]
        groups = images // frames
        parts = []
        try:
            for start, stop in self.bounds:
                if on_window is not None:
                    on_window(tuple(range(start, stop)))
                parts.append(forward(*cut_rows(args, images, groups, start, stop),
                                     **cut_rows(kwargs, images, groups, start, stop)))
        finally:
            if on_window is not None:
                on_window(None)
        return join_rows(parts, self.bounds, groups, frames, who)

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


class _WindowedForward(ModelHook):
    """The diffusers hook: the module's forward (whatever wraps it already, an offloading hook included) called
    once per window."""

    def __init__(self, windows: CallWindows, first_arg: str, on_window):
        super().__init__()
        self.windows, self.first_arg, self.on_window = windows, first_arg, on_window

    def new_forward(self, module, *args, **kwargs):
        return self.windows.run(self.fn_ref.original_forward, args, kwargs, self.first_arg, self.on_window)

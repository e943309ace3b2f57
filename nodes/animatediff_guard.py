"""Cross-frame attention beside AnimateDiff-Evolved (Kosinkadink/ComfyUI-AnimateDiff-Evolved, "ADE").

ADE samples a clip as one video: its motion modules, injected into the U-Net, attend across every frame of
each model call, and its own context options (sliding windows) cut a model evaluation into windows of frames.
The one thing ADE exposes to other packs is `transformer_options["ad_params"]`
({"full_length", "context_length", "sub_idxs"}), set on every model evaluation its sampling drives; nothing
here touches ADE's internals.

Two combinations would silently give a wrong clip, so they stop with an error instead:
- ADE's context options: a model call holds `sub_idxs`, a window of the clip, evaluated in an order and with
  overlaps that cross-frame attention cannot follow (it needs each frame's previous frame evaluated before it,
  and knows no window ADE does not announce through core's `context_window`). A single window holding the
  whole clip in order (ADE's "Views Only" context options: the motion module works in views, the model sees
  every frame) is the whole clip, and is let through.
- the pack's windows (or core's Context Windows (Manual)) under ADE: the motion modules would take each
  window for the whole video (they reshape the batch by the clip length), mixing frames and conditionings.
"""
from __future__ import annotations

from ..attention.errors import CrossFrameError

AD_PARAMS = "ad_params"
ADE = "AnimateDiff-Evolved"


def refuse_animatediff_context(extra_options: dict, who: str) -> None:
    """Called once per patched self-attention call that holds no core context window: stop if ADE's
    context options gave this call only part of the clip."""
    ad_params = extra_options.get(AD_PARAMS)
    if ad_params is None:
        return
    sub_idxs = ad_params.get("sub_idxs")
    if sub_idxs is None:
        return
    full = ad_params.get("full_length")
    if len(sub_idxs) == full and list(sub_idxs) == list(range(full)):
        return   # one window holding the whole clip in order (ADE's Views Only context options)
    raise CrossFrameError(
        f"{who}: {ADE}'s context options (sliding context windows) hand the model {len(sub_idxs)} of the clip's "
        f"{full} frames at a time, in overlapping windows that cross-frame attention cannot follow (each frame "
        f"needs its previous frame evaluated before it in the same step). Use {ADE}'s 'Context Options◆Views "
        f"Only' instead (the motion module then attends in views of its own length while the model sees the "
        f"whole clip), or remove the context_options input from {ADE}'s loader (AnimateDiff Loader / Use "
        f"Evolved Sampling) for a clip within the motion module's length (e.g. 16 or 32 frames).")


def refuse_windows_under_animatediff(model_options: dict, n_frames: int, window: str, fix: str,
                                     who: str) -> None:
    """Called when a model evaluation is about to be split into windows (the pack's, or the user's
    bracketed): stop if ADE drives the sampling, whose motion modules need every frame in every call."""
    ad_params = (model_options.get("transformer_options") or {}).get(AD_PARAMS)
    if ad_params is None:
        return
    raise CrossFrameError(
        f"{who}: the model samples with {ADE}, whose motion modules take every model call for the whole "
        f"{n_frames}-frame video, but {window} would hand them a few frames at a time (they would mix frames "
        f"and conditionings without any error). {fix}")

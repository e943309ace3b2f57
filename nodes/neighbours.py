"""Core nodes that patch the same MODEL as ours, recognised by what they put into the model (its model options,
patch lists and wrappers), never by hooking them: so that a combination that cannot be right stops with an
error naming both nodes when sampling starts, instead of a silently wrong clip or a raw traceback.

Which combinations need what, and why, is docs/compatibility.md (generated from the composition matrix test).
"""
from __future__ import annotations

from comfy.patcher_extension import WrappersMP

from ..attention.errors import CrossFrameError

# Module of a callable a core node registers (its file name: ComfyUI loads comfy_extras by path, so the module
# is named after the file's path) -> the node's display name.
_NODE_OF_MODULE = {"nodes_sag": "Self-Attention Guidance"}


def node_of(fn) -> str | None:
    """The core node that registered callable `fn`, if it is one this module knows."""
    module = getattr(fn, "__module__", None) or getattr(type(fn), "__module__", "") or ""
    if "comfy_extras" not in module:
        return None
    return _NODE_OF_MODULE.get(module.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[-1])


def _callables(model_options: dict):
    """Every callable another node put into the model options a sampler will use."""
    options = model_options.get("transformer_options", {})
    for group in options.get("patches", {}).values():
        yield from group
    for replaced in options.get("patches_replace", {}).values():
        yield from replaced.values()
    yield from model_options.get("sampler_post_cfg_function", [])


def _has_wrapper(model_patcher, wrapper_type: str, key: str) -> bool:
    wrappers = getattr(model_patcher, "wrappers", {}) or {}
    return bool(wrappers.get(wrapper_type, {}).get(key))


def window_conflicts(model_patcher, model_options: dict) -> list[tuple[str, str]]:
    """[(node, why)] for nodes on this model that keep state of ONE model call of the whole batch, which a
    model evaluation split into windows (several calls, each a part of the clip) would silently break."""
    found = []
    if any(node_of(fn) == "Self-Attention Guidance" for fn in _callables(model_options)):
        found.append(("Self-Attention Guidance",
                      "it keeps the attention map of one U-Net call and blurs the whole clip with it; in windows "
                      "it gets only the last window's map"))
    if "easycache" in model_options.get("transformer_options", {}) and \
            _has_wrapper(model_patcher, WrappersMP.DIFFUSION_MODEL, "easycache"):
        found.append(("EasyCache",
                      "it keeps one cached input/output change per conditioning from the last model call; in "
                      "windows each window overwrites the one before, and skipped steps reuse another window's "
                      "frames"))
    return found


def refuse_window_conflicts(model_patcher, model_options: dict, who: str, windows: str, fix: str) -> None:
    """Raise, naming both nodes and the graphs that work, if a node on this model cannot run in windows.
    windows: what splits the evaluation, in words; fix: how to sample the clip in one model call instead."""
    conflicts = window_conflicts(model_patcher, model_options)
    if not conflicts:
        return
    node, why = conflicts[0]
    raise CrossFrameError(
        f"{who}: this clip would be sampled in {windows}, and the model carries {node}, which cannot be split "
        f"into windows: {why}. Either {fix}, or remove {node} from the MODEL chain.")

"""Wan's way into self-attention for cross-window anchors (attention/window_anchors.py), through public hooks.

Wan's blocks have no hook with the self-attention's keys (its `attn1_patch` runs after attention), but every
attention call goes through ComfyUI's attention override, `transformer_options["optimized_attention_override"]`,
with q/k/v as `[batch, tokens, heads * dim]` after RoPE. Self and cross attention arrive there alike, so the
layer says which is which, not the shapes:

- a block replace on every `("double_block", i)` (chained: one already set is called, with ours inside it
  around the real block) marks "the next attention call is block i's self-attention": WanAttentionBlock calls
  its self-attention first, then cross attention (twice for I2V: image then text), and VACE's extra blocks run
  outside the main blocks' replaces;
- the override (one slot: ours wraps the override already set, as way_attention_override.py does) consumes
  the mark on the next call and checks that it is a self-attention (keys as long as queries); unmarked calls
  pass through untouched;
- a DIFFUSION_MODEL wrapper works out once per model call which clip frames the call holds (core's context
  window, its causal frame included), the tokens of one latent frame and the call's sigma and conditionings,
  and after the call checks that our override was reached (another node's override set after ours replaces
  it: sampling stops with an error naming both).
"""
from __future__ import annotations

import functools
import math
import threading

from ...attention.errors import CrossFrameError
from ...attention.window_anchors import WindowAnchors, WindowCall
from ..windows import window_frames
from .base import class_at, eager
from .way_attention_override import OVERRIDE_KEY, describe

CALL_KEY = "cfa_window_anchors_call"
WRAPPER_KEY = "cross_window_anchors"
# Exactly these classes: Wan 2.1 and 2.2 (t2v, i2v, ti2v 5B) sample WanModel, VACE samples VaceWanModel. Other
# Wan variants (camera, S2V, HuMo, Animate, causal) run their blocks differently and are refused.
WAN_CLASSES = (("comfy.ldm.wan.model", "WanModel"), ("comfy.ldm.wan.model", "VaceWanModel"))


def is_wan(diffusion_model) -> bool:
    return any(cls is not None and type(diffusion_model) is cls for cls in map(class_at, WAN_CLASSES))


def check_wan(model, who: str) -> None:
    """Refuse any model but Wan 2.1 / 2.2 / VACE (a comfy BaseModel)."""
    diffusion_model = getattr(model, "diffusion_model", None)
    if not is_wan(diffusion_model):
        raise CrossFrameError(
            f"{who}: the model is a {type(diffusion_model).__name__} ({type(model).__name__}); cross-window "
            "anchors serve Wan 2.1 / 2.2 (WanModel) and Wan VACE (VaceWanModel) only. Connect a Wan model, or "
            "remove this node.")
    patch = tuple(getattr(diffusion_model, "patch_size", (1, 2, 2)))
    if patch[0] != 1:
        raise CrossFrameError(f"{who}: this Wan model patches {patch[0]} latent frames together; cross-window "
                              "anchors need one latent frame per patch.")


class _Mark(threading.local):
    block = None   # the block whose self-attention the next attention call is (per thread: MultiGPU)
    reached = 0    # marked calls that reached the override


class WanWindowAttention:
    """The override callable and the block replaces' shared state. Deep copies return self (clone())."""

    def __init__(self, anchors: WindowAnchors, who: str):
        self.anchors = anchors
        self.who = who
        self.previous = None   # the override this one wraps (None: core's attention function)
        self.mark = _Mark()

    def __deepcopy__(self, memo):
        return self

    @eager
    def __call__(self, func, *args, **kwargs):
        forward = func if self.previous is None else functools.partial(self.previous, func)
        block = self.mark.block
        if block is None:
            return forward(*args, **kwargs)   # cross attention, VACE blocks, anything unmarked
        self.mark.block = None
        self.mark.reached += 1
        call = (kwargs.get("transformer_options") or {}).get(CALL_KEY)
        if call is None:
            return forward(*args, **kwargs)
        q, k, v = args[:3]
        if kwargs.get("skip_reshape", False) or k.ndim != 3 or k.shape[1] != q.shape[1]:
            raise CrossFrameError(
                f"{self.who}: the first attention call of Wan block {block} is not a self-attention in the "
                f"layout this pack knows (queries {list(q.shape)}, keys {list(k.shape)}): another node changed "
                f"Wan's blocks or attention before this one. Put {self.who} first (upstream), or remove the "
                "other node.")
        k, v = self.anchors.kv(block, call, k, v)
        return forward(q, k, v, *args[3:], **kwargs)

    def block_replace(self, index: int, previous):
        """The replace for ("double_block", index): marks the block's first attention call, around the real
        block, inside any replace that was already set."""
        def run_marked(original, args):
            self.mark.block = index
            try:
                return original(args)
            finally:
                self.mark.block = None

        def replace(args, extra):
            marked = functools.partial(run_marked, extra["original_block"])
            if previous is None:
                return marked(args)
            return previous(args, {**extra, "original_block": marked})
        return replace


def installed(model_options) -> WanWindowAttention | None:
    override = model_options.get("transformer_options", {}).get(OVERRIDE_KEY)
    while override is not None:
        if isinstance(override, WanWindowAttention):
            return override
        override = getattr(override, "previous", None)
    return None


def install(patcher, attention: WanWindowAttention) -> None:
    """Put the override, the block replaces and the per-call wrapper on `patcher` (a clone we own)."""
    from comfy.patcher_extension import WrappersMP
    options = patcher.model_options.setdefault("transformer_options", {})
    attention.previous = options.get(OVERRIDE_KEY)
    options[OVERRIDE_KEY] = attention
    replaces = options.get("patches_replace", {}).get("dit", {})
    for i in range(len(patcher.model.diffusion_model.blocks)):
        patcher.set_model_patch_replace(attention.block_replace(i, replaces.get(("double_block", i))),
                                        "dit", "double_block", i)
    patcher.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, functools.partial(_model_call, attention))


def _chunk_keys(options: dict) -> tuple:
    """One key per batch chunk: its cond/uncond flag and, where ComfyUI gives it, the conditioning's uuid (two
    positive conditionings are two chunks flagged 0)."""
    flags = list(options.get("cond_or_uncond") or [0])
    uuids = list(options.get("uuids") or [None] * len(flags))
    return tuple((int(f), None if u is None else str(u)) for f, u in zip(flags, uuids))


def call_of(diffusion_model, x, options: dict, who: str) -> WindowCall:
    """What a model call holds: the window's clip frames (the whole latent when no window is set)."""
    window = options.get("context_window")
    frames = window_frames(window) if window is not None else tuple(range(x.shape[2]))
    leading = len(frames) - len(window.index_list) if window is not None else 0   # core's causal frame
    if x.ndim != 5 or x.shape[2] != len(frames):
        raise CrossFrameError(
            f"{who}: this model call holds a latent of shape {list(x.shape)} for the {len(frames)} frames of its "
            "context window; the windows must split Wan's time dimension. Set dim to 2 on Context Windows "
            "(Manual), or use WAN Context Windows.")
    _, ph, pw = diffusion_model.patch_size
    tokens = math.ceil(x.shape[3] / ph) * math.ceil(x.shape[4] / pw)
    sigma = float(options["sigmas"].reshape(-1)[0]) if options.get("sigmas") is not None else 0.0
    return WindowCall(frames=frames, tokens_per_frame=tokens, sigma=sigma, chunks=_chunk_keys(options),
                      leading=leading)


def _model_call(attention: WanWindowAttention, executor, x, *args, **kwargs):
    options = kwargs.get("transformer_options")
    if options is None:
        options = next((a for a in args if isinstance(a, dict) and "cond_or_uncond" in a), None)
    if options is None:
        return executor(x, *args, **kwargs)
    options[CALL_KEY] = call_of(executor.class_obj, x, options, attention.who)
    before = attention.mark.reached
    try:
        out = executor(x, *args, **kwargs)
    finally:
        options.pop(CALL_KEY, None)
    if attention.mark.reached == before:
        current = options.get(OVERRIDE_KEY)
        raise CrossFrameError(
            f"{attention.who}: no Wan block's self-attention reached cross-window anchors in this model call: "
            f"another attention override ({describe(current)}) replaced ours, or another node replaced Wan's "
            f"blocks. Put {attention.who} after (downstream of) the node that sets the other override, so that "
            "ours wraps it, or remove one of them.")
    return out

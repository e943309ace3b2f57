"""Way in for DiTs whose blocks have no self-attention hook but call ComfyUI's attention function with the
model call's transformer_options (Z-Image / Lumina 2): the attention override,
`transformer_options["optimized_attention_override"](func, *args, **kwargs)`, called by every
`optimized_attention` with the function it would have run. One slot per model: the pack's override wraps the
one already there (it calls that one, with the anchored keys/values, instead of `func`).

Keys arrive here after RoPE: every frame's tokens sit at the same positions, so an anchor's keys are already
rotated as the frame's own would be, and nothing but k and v changes (the joint-token rule of joint_tokens.py).
Which rows are text: the `img_slice` the model puts in transformer_options where it has one (Krea2), else a
DIFFUSION_MODEL wrapper of the pack counts the image tokens from the latent at the start of each model call
(the model's own patch size and token padding; Z-Image) and puts the count in the call's transformer_options.
The same wrapper checks, after each model call, that the pack's override was reached;
if another node set an override of its own after ours (replacing it), sampling stops there with an error
naming both and the order that works, instead of silently sampling without cross-frame attention.
"""
from __future__ import annotations

import functools
import math
import threading

from ...attention.errors import CrossFrameError
from .base import Way
from .joint_tokens import JointTokensPatch

OVERRIDE_KEY = "optimized_attention_override"
IMAGE_TOKENS_KEY = "cfa_image_tokens"


def describe(override) -> str:
    if override is None:
        return "none"
    target = getattr(override, "func", override)   # functools.partial
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__name__)}"


class _Calls(threading.local):
    count = 0


class AttentionOverridePatch(JointTokensPatch):
    """Set as a model's attention override; `previous` is the override it wraps (None: core's function)."""

    def __init__(self, blocks: frozenset, who: str):
        super().__init__(blocks, who)
        self.previous = None
        self.calls = _Calls()

    def __call__(self, func, *args, **kwargs):
        self.calls.count += 1
        forward = func if self.previous is None else functools.partial(self.previous, func)
        eo = kwargs.get("transformer_options") or {}
        layer = self.layer_of(eo, args, kwargs)
        if layer is None or not self.selects(*layer):
            return forward(*args, **kwargs)   # refiner and text layers (unnamed), blocks not chosen
        q, k, v = args[:3]
        mask = args[4] if len(args) > 4 else kwargs.get("mask")
        self.check_mask(mask)
        self.check_layout(layer, args, kwargs)
        txt = self.text_rows(eo, k.shape[2])
        if txt is None:
            raise CrossFrameError(f"{self.who}: {self.family_name} block {layer[0]} {layer[1]} did not say where "
                                  "its image tokens are; this ComfyUI version is not supported.")
        anchored = self.anchored_kv(k, v, txt, layer, eo)
        if anchored is None:
            return forward(*args, **kwargs)
        k, v, _ = anchored
        return forward(q, k, v, *args[3:], **kwargs)

    def layer_of(self, options: dict, args, kwargs) -> tuple | None:
        """(block kind, index) of the self-attention this call is, or None for any other attention call: here
        the block's own name in transformer_options (refiner and text layers carry none)."""
        block_type = options.get("block_type")
        return None if block_type is None else (block_type, options.get("block_index"))

    def text_rows(self, options: dict, length: int) -> int | None:
        return text_rows(options, length)

    def check_layout(self, layer, args, kwargs) -> None:
        """Self-attention as ComfyUI's attention function gets it: q, k, v `[B, heads, L, D]`, keys as long as
        the queries (anything else means another override changed the keys first, or a layout unknown here)."""
        q, k = args[:2]
        if not kwargs.get("skip_reshape", False) or k.ndim != 4 or q.shape[2] != k.shape[2]:
            raise CrossFrameError(
                f"{self.who}: the {self.family_name} attention of block {layer[0]} {layer[1]} came in a layout "
                "this pack does not know (or another override changed its keys first); apply this node "
                "before the other attention node, or sample without cross-frame attention.")


def text_rows(options: dict, length: int) -> int | None:
    """How many leading rows of a joint sequence of `length` are text (the rest: image tokens)."""
    if options.get("img_slice") is not None:
        return int(options["img_slice"][0])
    if options.get(IMAGE_TOKENS_KEY) is not None:
        return length - int(options[IMAGE_TOKENS_KEY])
    return None


class AttentionOverrideWay(Way):
    name = "attention override (chained)"
    patch_class = AttentionOverridePatch
    since = "0.30.0"
    hook_words = "attention override in these blocks"

    def __init__(self, image_tokens=None):
        """image_tokens(diffusion_model, latent) -> how many of the last sequence rows are image tokens, for
        models that do not put an `img_slice` in transformer_options; None for those that do."""
        self.image_tokens = image_tokens

    def install(self, patcher, patch: AttentionOverridePatch) -> None:
        options = patcher.model_options.setdefault("transformer_options", {})
        patch.previous = options.get(OVERRIDE_KEY)
        options[OVERRIDE_KEY] = patch
        from comfy.patcher_extension import WrappersMP
        patcher.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "cross_frame_attention",
                                     functools.partial(self._model_call, patch))

    def installed(self, model_options):
        override = model_options.get("transformer_options", {}).get(OVERRIDE_KEY)
        while override is not None:
            if isinstance(override, AttentionOverridePatch):
                return override
            override = getattr(override, "previous", None)
        return None

    def _model_call(self, patch: AttentionOverridePatch, executor, x, *args, **kwargs):
        # Models hand their diffusion-model wrappers transformer_options by keyword (NextDiT) or by position
        # (Krea2); it is the dict that sampling tagged with cond_or_uncond.
        options = kwargs.get("transformer_options")
        if options is None:
            options = next((a for a in args if isinstance(a, dict) and "cond_or_uncond" in a), None)
        if options is None:
            return executor(x, *args, **kwargs)
        if self.image_tokens is not None:
            options[IMAGE_TOKENS_KEY] = self.image_tokens(executor.class_obj, x)
        before = patch.calls.count
        out = executor(x, *args, **kwargs)
        current = options.get(OVERRIDE_KEY)
        if patch.calls.count == before:
            raise replaced_error(patch, current)
        return out


def replaced_error(patch: AttentionOverridePatch, current, detail: str = "") -> CrossFrameError:
    """The error for a model call in which the pack's override was not reached: `current` is the override
    that sits in the slot instead; `detail` what showed it."""
    return CrossFrameError(
        f"{patch.who}: another attention override ({describe(current)}) replaced cross-frame attention's on "
        f"this {patch.family_name} model{detail}, so the frames would be sampled without it. Put {patch.who} "
        "after (downstream of) the node that sets the other override, so that ours wraps it, or remove one of "
        "them.")


def probe_named_attention(call_model) -> bool | None:
    """Whether a tiny model's main blocks send their attention through the override with the block named in
    transformer_options: `call_model(transformer_options)` runs the tiny model once."""
    from .way_dit_pre_attention import probe_call

    def run_block(patches):
        probe = patches["attn1_patch"][0]

        def override(func, *args, **kwargs):
            if "block_type" in (kwargs.get("transformer_options") or {}):
                probe()
            return func(*args, **kwargs)
        call_model({OVERRIDE_KEY: override})
    return probe_call(run_block)


def padded_patch_tokens(diffusion_model, latent) -> int:
    """Image tokens of a NextDiT-style model: patches of the latent, padded up to the model's multiple."""
    p = int(getattr(diffusion_model, "patch_size", 1))
    tokens = math.ceil(latent.shape[-2] / p) * math.ceil(latent.shape[-1] / p)
    multiple = getattr(diffusion_model, "pad_tokens_multiple", None)
    return tokens if not multiple else math.ceil(tokens / multiple) * multiple

"""The DiT pre-attention adapter shared by Flux / Flux.2 and Qwen-Image (ComfyUI 0.30.0 and newer).

Their joint-attention blocks call every `attn1_patch` entry as `p(q, k, v, pe=, attn_mask=, extra_options=)`
with q/k/v `[B, heads, L, D]` (text tokens first, then image tokens; after QK-norm, before RoPE) and use the
`q`, `k`, `v`, `pe`, `attn_mask` of the returned dict. The adapter:

1. hands the core one self-attention input per layer call: the image rows of k and v side by side along
   channels, `[B, L_img, 2 * heads * D]`, so recording and occurrence counting happen once per layer call
   and the core stays family-agnostic (it only ever sees "frames x conditionings by tokens by channels");
2. rebuilds keys and values from the core's answer (the anchors' image rows, `[B, n * L_img, 2 * heads * D]`
   for n anchors) as `[txt; anchor 1 image; txt; anchor 2 image; ...]`, each anchor paired with the frame's
   own text tokens, and extends `pe` to match by repeating it n times.

Why this rule: attention over `[txt; img0; txt; img0]` equals attention over `[txt; img0]` (softmax over
duplicated keys), so the clip's frame 0, and any frame whose anchors are identical to it, is exactly plain
sampling; text keeps its weight relative to the image whatever the number of anchors; no mask is needed, so
the user's attention backend runs unchanged (a mask would push flash attention off its fast path). Anchor
tokens keep the RoPE positions of the same pixels (their copy of `pe` is the frame's own). ComfyUI rotates q
with the first Lq rows of `pe` and k with all of it, so the extended `pe` keeps `[txt; img]` first.

"Image rows" are every row after the text: with Kontext / Flux.2 / Qwen-Image-Edit reference images
(`reference_image_num_tokens`), the reference image's tokens ride along with the frame's own, so each frame
also sees its anchors' view of the reference image. Reference and frames must then carry the same reference
images (otherwise the token counts differ and the run stops with the resolution error).
"""
from __future__ import annotations

import inspect
import threading

import torch

from ..attention.errors import CrossFrameError
from ..attention.options import is_dit_blocks
from .family import DIT_HOOK_SINCE, SUPPORTED, CrossFramePatch, Family, comfyui_version


class _PeCache(threading.local):
    """The extended `pe` of the current model call: every layer of one call gets the same `pe` object, so it
    is repeated once per call, not once per layer (per thread: MultiGPU CFG split runs calls in parallel)."""

    def __init__(self):
        self.source = None
        self.copies = 0
        self.extended = None


class DiTAttn1Patch(CrossFramePatch):
    """Callable for the DiT `attn1_patch` list (Flux double/single blocks, Qwen-Image blocks)."""

    family_name = "DiT"

    def __init__(self, blocks: frozenset, who: str):
        super().__init__(blocks, who)
        self._pe = _PeCache()

    def check_mask(self, attn_mask) -> None:
        if attn_mask is not None:
            raise CrossFrameError(
                f"{self.who}: the {self.family_name} attention carries a mask (a masked/regional "
                "conditioning), which cross-frame attention cannot extend. Remove the attention mask from "
                "the conditioning, or sample without cross-frame attention.")

    def __call__(self, q, k, v, pe=None, attn_mask=None, extra_options=None):
        eo = extra_options if extra_options is not None else {}
        block_type, index = eo.get("block_type"), eo.get("block_index")
        if block_type is None or not self.selects(block_type, index):
            return {}
        run = self.current_run()
        self.check_mask(attn_mask)
        b, heads, length, dim = k.shape
        if q.shape[2] != length or v.shape[2] != length or (pe is not None and pe.shape[2] != length):
            raise CrossFrameError(
                f"{self.who}: another attention patch earlier in the chain changed the keys/values of "
                f"{self.family_name} block {block_type} {index} (queries {q.shape[2]} tokens, keys "
                f"{length}); cross-frame attention cannot combine with it. Apply this node before (upstream "
                "of) the other patch node, or remove one of them.")
        img_slice = eo.get("img_slice")
        if img_slice is None:
            raise CrossFrameError(f"{self.who}: {self.family_name} block {block_type} {index} did not say where "
                                  "its image tokens are (no img_slice); this ComfyUI version is not supported.")
        txt = int(img_slice[0])
        img = length - txt
        # One self-attention input per layer call: image keys and values side by side, [B, L_img, 2*H*D].
        x = k.new_empty(b, img, 2, heads, dim)
        x[:, :, 0] = k[:, :, txt:].transpose(1, 2)
        x[:, :, 1] = v[:, :, txt:].transpose(1, 2)
        kv = run.kv((block_type, index), x.view(b, img, 2 * heads * dim), eo["cond_or_uncond"], eo["sigmas"],
                    eo.get("uuids"), self.window_frames(eo))
        del x
        if kv is None:
            return {}
        copies = kv.shape[1] // img
        anchors = kv.view(b, copies, img, 2, heads, dim)
        out = {"k": self._rebuild(k, anchors, 0, txt), "v": self._rebuild(v, anchors, 1, txt)}
        if pe is not None:
            out["pe"] = self._extended_pe(pe, copies)
        return out

    @staticmethod
    def _rebuild(own: torch.Tensor, anchors: torch.Tensor, which: int, txt: int) -> torch.Tensor:
        """[txt; anchor 1; txt; anchor 2; ...] as [B, heads, n * L, D], in one allocation."""
        b, copies, img, _, heads, dim = anchors.shape
        out = own.new_empty(b, heads, copies, txt + img, dim)
        out[:, :, :, :txt] = own[:, :, None, :txt]
        out[:, :, :, txt:] = anchors[:, :, :, which].permute(0, 3, 1, 2, 4)
        return out.view(b, heads, copies * (txt + img), dim)

    def _extended_pe(self, pe: torch.Tensor, copies: int) -> torch.Tensor:
        if copies == 1:
            return pe
        cache = self._pe
        if cache.source is not pe or cache.copies != copies:
            cache.source, cache.copies = pe, copies
            cache.extended = torch.cat([pe] * copies, dim=2)
        return cache.extended


def hook_in_source(*functions) -> bool:
    """Whether these block forwards call the pre-attention `attn1_patch` (read from their source; a build
    without sources is given the benefit of the doubt)."""
    for fn in functions:
        try:
            if "attn1_patch" not in inspect.getsource(fn):
                return False
        except (OSError, TypeError):
            continue
    return True


class DiTFamily(Family):
    """A DiT whose blocks call the pre-attention hook; subclasses say which class and which blocks."""

    model_class_path = ("", "")   # (module, class name) of the diffusion model
    block_lists = {}              # block type -> attribute holding those blocks on the diffusion model

    def model_class(self):
        import importlib
        module, name = self.model_class_path
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            return None

    def matches(self, diffusion_model) -> bool:
        cls = self.model_class()
        return cls is not None and type(diffusion_model) is cls   # exact: look-alikes may call blocks otherwise

    def hook_present(self) -> bool:
        raise NotImplementedError

    def block_counts(self, diffusion_model) -> dict:
        return {kind: len(getattr(diffusion_model, attr, ())) for kind, attr in self.block_lists.items()}

    def check(self, model, blocks: frozenset, who: str) -> None:
        diffusion_model = model.diffusion_model
        if not self.hook_present():
            raise CrossFrameError(
                f"{who}: this is a {self.name} model, but ComfyUI {comfyui_version()} has no self-attention "
                f"hook in {self.name} blocks, so cross-frame attention would change nothing. Update ComfyUI "
                f"to {DIT_HOOK_SINCE} or newer. Supported: {SUPPORTED}.")
        counts = self.block_counts(diffusion_model)
        have = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        if not is_dit_blocks(blocks):
            raise CrossFrameError(
                f"{who}: blocks '{'+'.join(sorted(blocks))}' are U-Net block groups, but this is a {self.name} "
                f"model ({have} blocks). Choose auto, or {self.block_hint}.")
        patch = self.make_patch(blocks, who)
        if not any(patch.selects(kind, i) for kind, n in counts.items() for i in range(n)):
            raise CrossFrameError(
                f"{who}: blocks '{'+'.join(sorted(blocks))}' select none of this {self.name} model's blocks "
                f"({have}), so cross-frame attention would change nothing. Choose auto, or {self.block_hint}.")

    block_hint = "double, single or double+single"

"""Way in for SD1.x / SD2.x / SDXL U-Nets: ComfyUI's attn1_patch in BasicTransformerBlock, called with the
normalised hidden states before the K/V projections (`p(n, context, value, extra_options)` -> a tuple), on
every ComfyUI version. The patch rewrites the K/V source and leaves the query alone, so it chains with other
packs' attn1 patches and any attn1 replace (PAG, SAG), and uses whatever attention backend the user picked."""
from __future__ import annotations

import threading
import weakref

import torch

from ...attention.errors import CrossFrameError
from .base import CrossFramePatch, Family, Way, eager

_counts: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> {blocks: count}


def self_attention_count(diffusion_model, family: Family, blocks: frozenset) -> int:
    """Transformer blocks (each with one self-attention) that ComfyUI's attn1 patch reaches in `blocks`."""
    cached = _counts.setdefault(diffusion_model, {})
    if blocks not in cached:
        from comfy.ldm.modules.attention import BasicTransformerBlock
        count = 0
        for group in blocks:
            part = getattr(diffusion_model, family.block_lists.get(group, ""), None)
            if isinstance(part, torch.nn.Module):
                count += sum(isinstance(m, BasicTransformerBlock) for m in part.modules())
        cached[blocks] = count
    return cached[blocks]


class _Extended(threading.local):
    """What the patch did to the current block's keys/values, for the chain's last entry (per thread:
    MultiGPU runs calls in parallel): None, or (anchors, tokens per anchor)."""
    value = None


class Attn1Patch(CrossFramePatch):
    """Callable for the U-Net `attn1_patch` list."""

    def __init__(self, blocks: frozenset, who: str):
        super().__init__(blocks, who)
        self.extended = _Extended()

    def __call__(self, n, context, value, extra_options):
        self.extended.value = None
        block = extra_options.get("block")
        if block is None or block[0] not in self.blocks:
            return n, context, value
        run = self.current_run()
        layer = (block[0], block[1], extra_options.get("block_index", 0))
        # Another patch earlier in the chain may have changed the K/V source; build on what it set.
        source = n if context is None else context
        if value is None or value is source:
            kv = run.kv(layer, source, extra_options["cond_or_uncond"], extra_options["sigmas"],
                        extra_options.get("uuids"), self.window_frames(extra_options))
            if kv is None:
                return n, context, value
            self.extended.value = (kv.shape[1] // source.shape[1], source.shape[1])
            return n, kv, kv
        # Separate key and value sources (a hypernetwork earlier in the chain transforms each token's key and
        # value input): both gather the same frames, so they travel as one tensor, side by side in channels.
        if value.shape[:-1] != source.shape[:-1]:
            raise CrossFrameError(
                f"{self.who}: an attn1 patch applied before it in the MODEL chain gave self-attention keys and "
                f"values of different lengths ({source.shape[1]} and {value.shape[1]} tokens), which cross-frame "
                "attention cannot extend together. Remove that node from the MODEL chain, or apply it to the "
                "MODEL output of Store Reference Attention / Cross-Frame Attention Patch instead (patch -> that "
                "node -> sampler).")
        width = source.shape[-1]
        kv = run.kv(layer, torch.cat([source, value], dim=-1), extra_options["cond_or_uncond"],
                    extra_options["sigmas"], extra_options.get("uuids"), self.window_frames(extra_options))
        if kv is None:
            return n, context, value
        self.extended.value = (kv.shape[1] // source.shape[1], source.shape[1])
        return n, kv[..., :width], kv[..., width:]


class QueryTiles:
    """The last entry of a run's attn1 patch chain (the run's own copy): when a patch tiled the query into
    several batch rows per image (core's HyperTile) and left keys/values whole, attention splits each image's
    keys/values into as many consecutive pieces, one per query tile. Cross-frame keys/values are several
    frames' tokens one after another, so they are regrouped: query tile j then attends to piece j of every
    anchor frame, as it attends to piece j of its own frame without cross-frame attention (frame 0, whose
    anchors are itself, stays exactly as HyperTile alone makes it)."""

    def __init__(self, patch: Attn1Patch):
        self.patch = patch

    def __deepcopy__(self, memo):
        return self

    @eager
    def __call__(self, n, context, value, extra_options):
        extended = self.patch.extended.value
        self.patch.extended.value = None
        if extended is None or n.shape[0] == context.shape[0]:
            return n, context, value
        anchors, tokens = extended
        batch = context.shape[0]
        tiles = n.shape[0] // batch
        if n.shape[0] % batch or tokens % tiles or context.shape[1] != anchors * tokens \
                or value.shape[1] != anchors * tokens:
            raise CrossFrameError(
                f"{self.patch.who}: another node's attn1 patch (such as HyperTile) split self-attention's "
                f"queries into "
                f"{n.shape[0]} rows for {batch} images and left keys/values of {context.shape[1]} tokens that "
                "cross-frame attention cannot divide among them. Remove that node from the MODEL chain.")

        def regroup(x):
            return x.reshape(batch, anchors, tiles, tokens // tiles, x.shape[-1]).transpose(1, 2) \
                .reshape(batch, anchors * tokens, x.shape[-1])
        keys = regroup(context)
        return n, keys, keys if value is context else regroup(value)


class UNetAttn1Way(Way):
    name = "U-Net attn1 patch (pre-projection)"
    patch_class = Attn1Patch

    def prepare_run(self, model_options: dict, patch: Attn1Patch) -> None:
        """Put QueryTiles last in this run's attn1 chain (the list is the run's own copy)."""
        patches = model_options.setdefault("transformer_options", {}).setdefault("patches", {})
        patches["attn1_patch"] = [p for p in patches.get("attn1_patch", []) if not isinstance(p, QueryTiles)] \
            + [QueryTiles(patch)]

    def check(self, family: Family, model, blocks: frozenset, who: str) -> None:
        from . import supported_text
        diffusion_model = getattr(model, "diffusion_model", None)
        chosen = "+".join(sorted(blocks))
        kind = type(diffusion_model).__name__ if diffusion_model is not None else type(model).__name__
        is_unet = diffusion_model is not None and \
            self_attention_count(diffusion_model, family, family.block_names()) > 0
        if not is_unet:
            # No U-Net transformer anywhere: a model no declaration claims (a DiT, most often). Say so in its
            # own words, not in U-Net block names.
            raise CrossFrameError(
                f"{who}: this model's diffusion model is a {kind}{_config_words(model)}, which no model family "
                f"of the pack covers, so cross-frame attention would change nothing on it. Supported: "
                f"{supported_text()}. Sample it without cross-frame attention (connect the model to KSampler "
                f"directly), or load a checkpoint of a supported family{_other_node_for(diffusion_model)}.")
        if family.names_blocks_of_another_kind(blocks):
            raise family.kinds_error(blocks, who, f" ({kind})")
        if self_attention_count(diffusion_model, family, blocks) > 0:
            return
        raise CrossFrameError(
            f"{who}: blocks '{chosen}' hold no self-attention of this U-Net ({kind}), so cross-frame attention "
            "would change nothing. Choose blocks that contain attention: auto or 'output' (the decoder) always "
            "do.")


def _config_words(model) -> str:
    """' (ComfyUI's <config> model)' when ComfyUI says which model config it detected."""
    config = getattr(model, "model_config", None)
    return f" (ComfyUI detected a {type(config).__name__} model)" if config is not None else ""


def _other_node_for(diffusion_model) -> str:
    from .way_wan_windows import is_wan
    if is_wan(diffusion_model):
        return ("; for a Wan video model sampled in context windows, use Cross-Window Anchors (with Context "
                "Windows (Manual) or WAN Context Windows) instead")
    return ""

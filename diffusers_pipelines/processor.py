"""Cross-frame attention as a diffusers attention processor (the diffusers front end of the core).

Part of the diffusers front end (`cross_frame_diffusers`, folder diffusers_pipelines/), which drives the
torch-only core (`cross_frame_attention`); the core and the ComfyUI nodes never import it, so ComfyUI users
don't need diffusers.

Pieces:
- `CrossFrameContext`: the one object all processors of a U-Net share. The pipeline puts the clip's `FrameRun`
  into it before the denoising loop and takes it out afterwards; a U-Net forward pre-hook (`StepHook`) writes
  the scheduler timestep of every U-Net call and its cond/uncond layout, and a U-Net call split into windows
  (model_windows.py) writes the clip frames each window holds. Nothing counts calls, so CFG in one batch,
  guidance scale 1 or any scheduler keep working.
- `CrossFrameAttnProcessor`: installed on the chosen spatial self-attention layers (`attn1`). Query from the
  layer's own hidden states; keys/values from whatever the core's `FrameRun.kv` returns (anchor frames'
  hidden states at the same layer and step), or from the hidden states themselves when the core says "leave
  this call alone". Fused attention via `F.scaled_dot_product_attention`.
- `install_processors` / `restore_processors`: swap the processors in and out; everything not chosen
  (cross-attention `attn2`, unchosen blocks, temporal layers of motion U-Nets) keeps the processor it had.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from cross_frame_attention.errors import CrossFrameError
from cross_frame_attention.run import FrameRun

# Spatial self-attention of a UNet2DConditionModel (SD1.x, SD2.x, SDXL shapes alike): the `attn1` of a
# transformer block inside an `attentions` list of a down block, the mid block or an up block. Motion modules
# (AnimateDiff) and ControlNet branches have other names and are never matched.
_SELF_ATTN = re.compile(
    r"^(?P<group>down_blocks|mid_block|up_blocks)(?:\.\d+)?\.attentions\.\d+\.transformer_blocks\.\d+"
    r"\.attn1\.processor$")
_GROUP_OF = {"down_blocks": "input", "mid_block": "middle", "up_blocks": "output"}
# The block groups this front end names (as ComfyUI names a U-Net's, so options read the same in both).
BLOCK_GROUPS = tuple(_GROUP_OF.values())
_SUFFIX = ".processor"


def block_group(processor_name: str) -> str | None:
    """"up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor" -> "output"; None for layers the
    method never touches (cross-attention, temporal attention, anything else)."""
    match = _SELF_ATTN.match(processor_name)
    return _GROUP_OF[match.group("group")] if match else None


def select_layers(processor_names: Iterable[str], blocks) -> list[str]:
    """Processor names of the spatial self-attention layers in the block groups `blocks`
    ("input" = down_blocks, "middle" = mid_block, "output" = up_blocks), in the U-Net's order."""
    wanted = set(blocks)
    unknown = wanted - set(BLOCK_GROUPS)
    if unknown:
        raise CrossFrameError(f"blocks {sorted(unknown)} are not U-Net block groups; use {BLOCK_GROUPS}.")
    return [name for name in processor_names if block_group(name) in wanted]


class CrossFrameContext:
    """What every cross-frame processor of one U-Net reads during a call.

    run: the `FrameRun` of the clip being denoised; None = ordinary self-attention everywhere.
    step: the scheduler timestep of the current U-Net call (a tensor or a float), the core's step key.
    cond_or_uncond: the CFG layout of the current U-Net call, per batch group (0 = cond, 1 = uncond);
        diffusers batches CFG as [uncond; cond], i.e. (1, 0), and (0,) when guidance is off.
    frames: the clip frames the current U-Net call holds when a model evaluation is split into windows (the
        frames of every group of the call); None = the whole clip.

    Copies are the same object (`copy.deepcopy` of a U-Net, a processor or a pipeline must not split the state
    the pipeline writes from the state the processors read).
    """

    def __init__(self):
        self.run: FrameRun | None = None
        self.step: Any = None
        self.cond_or_uncond: tuple[int, ...] = (0,)
        self.frames: tuple[int, ...] | None = None

    def set_window(self, frames: tuple[int, ...] | None) -> None:
        """The next U-Net call holds clip frames `frames` (a window); None: the evaluation's windows are done.
        The first window of an evaluation starts one for the run, whose carry lives until it ends."""
        run = self.run
        if frames is None:
            if run is not None and self.frames is not None:
                run.end_evaluation()
        elif self.frames is None and run is not None:
            run.begin_evaluation()
        self.frames = frames

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def clear(self) -> None:
        self.run = None
        self.step = None
        self.cond_or_uncond = (0,)
        self.frames = None


class CrossFrameAttnProcessor:
    """Self-attention whose keys and values may come from other frames (see the module docstring).

    layer: the core's key for this layer (the attention module's name in the U-Net), under which anchor frames
    are recorded and looked up.
    """

    def __init__(self, context: CrossFrameContext, layer: str):
        self.context = context
        self.layer = layer

    def __repr__(self):
        return f"{type(self).__name__}(layer={self.layer!r})"

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        if encoder_hidden_states is not None:
            raise CrossFrameError(
                f"Cross-frame attention was installed on {self.layer}, which received encoder hidden states: it "
                "is not a self-attention layer. Choose other blocks.")
        if attention_mask is not None:
            raise CrossFrameError(
                f"Cross-frame attention on {self.layer} got an attention mask; masked self-attention is not "
                "supported (the keys come from other frames). Call the U-Net without `attention_mask`.")
        residual = hidden_states
        if getattr(attn, "spatial_norm", None) is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape4 = hidden_states.shape if hidden_states.ndim == 4 else None
        if shape4 is not None:
            b, c, h, w = shape4
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if getattr(attn, "group_norm", None) is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        ctx = self.context
        source = None
        if ctx.run is not None:
            if ctx.step is None:
                raise CrossFrameError(
                    f"Cross-frame attention on {self.layer} has no denoising step: the U-Net was called "
                    "without the step hook of the cross-frame pipeline.")
            source = ctx.run.kv(self.layer, hidden_states, ctx.cond_or_uncond, ctx.step, None, ctx.frames)
        if source is None:
            source = hidden_states

        batch = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        key = attn.to_k(source)
        value = attn.to_v(source)
        heads = attn.heads
        head_dim = key.shape[-1] // heads
        query = query.view(batch, -1, heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, heads, head_dim).transpose(1, 2)
        norm_q, norm_k = getattr(attn, "norm_q", None), getattr(attn, "norm_k", None)  # qk-norm models only
        if norm_q is not None:
            query = norm_q(query)
        if norm_k is not None:
            key = norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False, scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if shape4 is not None:
            out = out.transpose(-1, -2).reshape(shape4)
        if getattr(attn, "residual_connection", False):
            out = out + residual
        return out / getattr(attn, "rescale_output_factor", 1.0)


def install_processors(unet, context: CrossFrameContext, blocks) -> dict:
    """Put a `CrossFrameAttnProcessor` on every chosen self-attention layer of `unet`; returns the processors
    it had (pass them to `restore_processors`). Whatever sits on the other layers is kept, so cross-attention
    processors (IP-Adapter, sliced, xformers) keep working."""
    previous = dict(unet.attn_processors)
    chosen = set(select_layers(previous, blocks))
    if not chosen:
        raise CrossFrameError(
            f"The U-Net has no spatial self-attention layers in blocks {'+'.join(sorted(blocks))} "
            "(looked for down_blocks/mid_block/up_blocks.*.attentions.*.transformer_blocks.*.attn1). "
            "Choose other blocks.")
    procs = {name: CrossFrameAttnProcessor(context, name[:-len(_SUFFIX)]) if name in chosen else proc
             for name, proc in previous.items()}
    unet.set_attn_processor(procs)  # diffusers pops from the dict it gets: it's ours to lose
    return previous


def restore_processors(unet, previous: dict) -> None:
    unet.set_attn_processor(dict(previous))


class StepHook:
    """U-Net forward pre-hook: hands the call's timestep and CFG layout to the processors' context.

    `cfg` is a zero-argument callable saying whether the call carries [uncond; cond] (diffusers' CFG batch)
    or the cond half only.
    """

    def __init__(self, context: CrossFrameContext, cfg):
        self.context = context
        self.cfg = cfg

    def __call__(self, module, args, kwargs):
        timestep = args[1] if len(args) > 1 else kwargs.get("timestep")
        if timestep is None:
            raise CrossFrameError("Cross-frame attention: the U-Net was called without a timestep.")
        self.context.step = timestep
        self.context.cond_or_uncond = (1, 0) if self.cfg() else (0,)
        return None

    def attach(self, unet):
        """Register on `unet`; returns the handle (call `.remove()` when done)."""
        return unet.register_forward_pre_hook(self, with_kwargs=True)

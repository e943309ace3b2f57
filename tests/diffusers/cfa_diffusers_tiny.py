"""Tiny randomly initialised Stable Diffusion parts (no downloads) and a frame-by-frame reference of the method.

Sizes: 32x32 images, a VAE with one downsampling (latents 4x16x16), a two-level U-Net with cross-attention in
the down, mid and up blocks, a matching ControlNet, a 2-layer CLIP text model with a tokenizer built from a
vocabulary written here. SDXL-shaped: a two-level U-Net with text_time added conditioning (pooled text
embedding + 6 size numbers), a ControlNet made from it, two 2-layer CLIP text models (the second with a
projection: the pooled embedding) whose hidden states together are the cross-attention width.
Weights are drawn with std 1/sqrt(fan_in) so that attention is far from uniform and the method's effect
stands well above float round-off (the default init leaves it near uniform).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import (AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionControlNetImg2ImgPipeline,
                       UNet2DConditionModel)

SIZE = 32           # image side in pixels
TEXT_DIM = 32       # cross-attention width
TEXT_LEN = 8        # tokens of the prompt embeddings handed in directly
STEPS, STRENGTH = 4, 0.75   # DDIM: 3 denoising steps (timesteps 501, 251, 1)

_UNET_BLOCKS = dict(down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                    block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=TEXT_DIM,
                    attention_head_dim=8, norm_num_groups=8)


def spread_weights(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every matrix / conv kernel ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2); norms keep their defaults.
    (ControlNet's zero convolutions become live too, so the control images matter.)"""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return module.eval()


def tiny_unet(seed=1) -> UNet2DConditionModel:
    return spread_weights(UNet2DConditionModel(
        sample_size=SIZE // 2, in_channels=4, out_channels=4,
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), **_UNET_BLOCKS), seed)


def tiny_sdxl_unet(seed=4) -> UNet2DConditionModel:
    """SDXL-shaped: no attention in the outer level, two transformer blocks per attention, linear projections,
    text_time added conditioning."""
    return spread_weights(UNet2DConditionModel(
        sample_size=SIZE // 2, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), cross_attention_dim=TEXT_DIM, attention_head_dim=(4, 8),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=TEXT_DIM + 6 * 8, norm_num_groups=8), seed)


def tiny_controlnet(seed=2) -> ControlNetModel:
    return spread_weights(ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(16, 32),
                                          **_UNET_BLOCKS), seed)


def tiny_sdxl_controlnet(unet: UNet2DConditionModel, seed=8) -> ControlNetModel:
    return spread_weights(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32)), seed)


def tiny_vae(seed=3, **config) -> AutoencoderKL:
    """config: more AutoencoderKL settings, e.g. latents_mean / latents_std."""
    return spread_weights(AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=SIZE, **config), seed)


def ddim() -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def tiny_text(tmp_dir: Path):
    """A 2-layer CLIP text encoder and a tokenizer over a vocabulary of letters and a few words."""
    from transformers import CLIPTextModel

    tokenizer = tiny_tokenizer(tmp_dir)
    torch.manual_seed(5)
    encoder = CLIPTextModel(_text_config(len(tokenizer), TEXT_DIM))
    return encoder.eval(), tokenizer


def tiny_tokenizer(tmp_dir: Path):
    """A CLIP tokenizer over a vocabulary of letters and a few words (files written into tmp_dir)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for word in ("a", "cat", "dog", "red", "blue", "photo", "of"):
        vocab[word + "</w>"] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (tmp_dir / "vocab.json").write_text(json.dumps(vocab))
    (tmp_dir / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(tmp_dir / "vocab.json"), str(tmp_dir / "merges.txt"), model_max_length=32)


def _text_config(vocab_size: int, hidden: int, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32, bos_token_id=0,
                          eos_token_id=1, pad_token_id=1, **extra)


def tiny_sdxl_text(tmp_dir: Path) -> dict:
    """SDXL's two text encoders and tokenizers: CLIP (width 16) and CLIP with projection (width 16, pooled
    projection TEXT_DIM); their penultimate hidden states side by side are TEXT_DIM wide."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tiny_tokenizer(tmp_dir)
    torch.manual_seed(6)
    first = CLIPTextModel(_text_config(len(tokenizer), TEXT_DIM // 2))
    second = CLIPTextModelWithProjection(_text_config(len(tokenizer), TEXT_DIM // 2, projection_dim=TEXT_DIM))
    return dict(text_encoder=first.eval(), tokenizer=tokenizer, text_encoder_2=second.eval(),
                tokenizer_2=tokenizer)


def components(with_controlnet=True, text=None) -> dict:
    parts = dict(vae=tiny_vae(), text_encoder=None, tokenizer=None, unet=tiny_unet(), scheduler=ddim(),
                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if text is not None:
        parts["text_encoder"], parts["tokenizer"] = text
    if with_controlnet:
        parts["controlnet"] = tiny_controlnet()
    return parts


def sdxl_components(text: dict | None = None) -> dict:
    unet = tiny_sdxl_unet()
    parts = dict(vae=tiny_vae(), text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                 unet=unet, controlnet=tiny_sdxl_controlnet(unet), scheduler=ddim(), add_watermarker=False)
    parts.update(text or {})
    return parts


def make(cls, parts: dict):
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_frames(n: int, seed: int, size: int = SIZE) -> list:
    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def embeddings(seed=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g), torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g)


def sdxl_embeddings(frames: int, seed=9) -> dict:
    """SDXL conditioning handed in directly: one prompt/negative row for the clip, a pooled embedding per frame
    (so a window given another frame's pooled row would show) and one negative pooled row."""
    g = torch.Generator().manual_seed(seed)
    return dict(prompt_embeds=torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g),
                negative_prompt_embeds=torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g),
                pooled_prompt_embeds=torch.randn(frames, TEXT_DIM, generator=g),
                negative_pooled_prompt_embeds=torch.randn(1, TEXT_DIM, generator=g))


def rel_diff(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a), \
        torch.as_tensor(np.asarray(b) if not torch.is_tensor(b) else b)
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


def max_abs(a, b) -> float:
    return float((torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max())


# -- the method written the plain way: one frame at a time, STORE then LOAD ---------------------------------
def _is_chosen(name: str, prefixes) -> bool:
    return name.endswith("attn1.processor") and ".attentions." in name and name.startswith(tuple(prefixes))


class _Recorder:
    """Per (layer, timestep): the first frame's and the previous frame's self-attention inputs. With
    anchor_every = N, frame k*N (k >= 1) is a keyframe: it attends to [itself; previous], and the frames after
    it to [it; previous]."""

    def __init__(self, anchors="first+previous", include_self=False, active=lambda t: True, anchor_every=0):
        self.anchors, self.include_self, self.active = anchors, include_self, active
        self.every = anchor_every
        self.first, self.prev, self.current = {}, {}, {}
        self.frame = 0
        self.step = None

    @property
    def keyframe(self) -> bool:
        return bool(self.every) and self.frame > 0 and self.frame % self.every == 0

    def next_frame(self):
        if self.frame == 0 or self.keyframe:
            self.first = self.current
        self.prev, self.current = self.current, {}
        self.frame += 1


class _ReferenceProcessor:
    """Self-attention with a plain softmax; from the second frame on, K/V = [first; previous] of the same layer
    and step (each tensor holds [uncond; cond] of one frame, so CFG halves never mix)."""

    def __init__(self, rec: _Recorder, layer: str):
        self.rec, self.layer = rec, layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        rec, x = self.rec, hidden_states
        key = (self.layer, rec.step)
        rec.current[key] = x.clone()
        kv = x
        if rec.frame > 0 and rec.active(rec.step):
            parts = []
            if "first" in rec.anchors:
                parts.append(x if rec.keyframe else rec.first[key])
            if "previous" in rec.anchors:
                parts.append(rec.prev[key])
            if rec.include_self:
                parts.append(x)
            kv = torch.cat(parts, dim=1)
        b, heads = x.shape[0], attn.heads
        q, k, v = attn.to_q(x), attn.to_k(kv), attn.to_v(kv)
        d = q.shape[-1] // heads
        q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, -1, heads * d)
        return attn.to_out[1](attn.to_out[0](out))


def install_reference(unet, rec: _Recorder, prefixes=("up_blocks",)):
    """Put the reference processors on the chosen attn1 layers; returns a function undoing it all."""
    before = dict(unet.attn_processors)
    procs = {n: _ReferenceProcessor(rec, n) if _is_chosen(n, prefixes) else p for n, p in before.items()}
    assert any(isinstance(p, _ReferenceProcessor) for p in procs.values())
    unet.set_attn_processor(procs)

    def pre_hook(module, args, kwargs):
        rec.step = int((args[1] if len(args) > 1 else kwargs["timestep"]).reshape(-1)[0])

    handle = unet.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def undo():
        handle.remove()
        unet.set_attn_processor(dict(before))

    return undo


def reference_clip(parts: dict, frames, controls, seed: int, prompt_embeds, negative_embeds, guidance=7.5,
                   prefixes=("up_blocks",), **method) -> torch.Tensor:
    """The SD ControlNet img2img edit of the clip, one frame at a time (see `frame_by_frame`)."""
    return frame_by_frame(StableDiffusionControlNetImg2ImgPipeline, parts, frames, controls, seed,
                          dict(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds),
                          guidance=guidance, prefixes=prefixes, **method)


def frame_by_frame(pipeline_cls, parts: dict, frames, controls, seed: int, embeds: dict, guidance=7.5,
                   prefixes=("up_blocks",), call_kwargs=None, **method) -> torch.Tensor:
    """Edit the clip one frame at a time with a stock diffusers ControlNet img2img pipeline and the reference
    processors. Starting latents: the stock pipeline's own draw for the whole clip as one batch. `embeds`:
    tensors by argument name with one row (the same for every frame) or one per frame (row i for frame i)."""
    pipe = make(pipeline_cls, parts)
    n = len(frames)
    pipe.scheduler.set_timesteps(STEPS)
    timesteps, _ = pipe.get_timesteps(STEPS, STRENGTH, "cpu")
    images = pipe.image_processor.preprocess(frames)
    latents = pipe.prepare_latents(images, timesteps[:1].repeat(n), n, 1, torch.float32, "cpu",
                                   torch.Generator().manual_seed(seed))
    rec = _Recorder(**method)
    undo = install_reference(pipe.unet, rec, prefixes)
    out = []
    try:
        for i in range(n):
            rows = {k: (v[i:i + 1] if v.shape[0] == n else v) for k, v in embeds.items()}
            result = pipe(image=frames[i], control_image=controls[i], latents=latents[i:i + 1],
                          guidance_scale=guidance, strength=STRENGTH, num_inference_steps=STEPS,
                          output_type="latent", **rows, **(call_kwargs or {}))
            out.append(result.images)
            rec.next_frame()
    finally:
        undo()
    return torch.cat(out)

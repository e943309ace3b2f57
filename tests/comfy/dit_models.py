"""Tiny randomly initialised Flux.1, Flux.2, Chroma, Chroma Radiance, HunyuanVideo, Qwen-Image, Z-Image, Krea2,
Cosmos Predict2 and Anima models built in-process (no downloads), shaped like the real ones (same classes, same
block kinds, same latent formats), with std 1/sqrt(fan_in) weights."""
from __future__ import annotations

import dataclasses

import torch

from tiny_weights import init_weights


def _flux_config(comfy, flux2: bool) -> dict:
    from comfy.ldm.flux.model import FluxParams
    if flux2:
        cfg = dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=32,
                   hidden_size=64, mlp_ratio=3.0, num_heads=4, depth=2, depth_single_blocks=2,
                   axes_dim=[4, 4, 4, 4], theta=2000, patch_size=1, qkv_bias=False, guidance_embed=False,
                   global_modulation=True, mlp_silu_act=True, ops_bias=False, default_ref_method="index",
                   ref_index_scale=10.0, txt_ids_dims=[3])
    else:
        cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32,
                   hidden_size=64, mlp_ratio=2.0, num_heads=4, depth=2, depth_single_blocks=2,
                   axes_dim=[4, 6, 6], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True,
                   txt_ids_dims=[])
    fields = {f.name for f in dataclasses.fields(FluxParams)}
    return {k: v for k, v in cfg.items() if k in fields or k == "image_model"}


# Chroma: Flux's blocks without per-block modulation; a distilled guidance layer (in_dim 64 = 16 timestep + 16
# guidance + 32 index channels) makes every block's modulation. Chroma Radiance: the same in pixel space.
_CHROMA = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=32, hidden_size=64,
               mlp_ratio=2.0, num_heads=4, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10000,
               patch_size=2, qkv_bias=True, in_dim=64, out_dim=64, hidden_dim=64, n_layers=1, txt_ids_dims=[],
               vec_in_dim=None)
_RADIANCE = dict(_CHROMA, image_model="chroma_radiance", in_channels=3, out_channels=3, patch_size=4,
                 nerf_hidden_size=16, nerf_mlp_ratio=2, nerf_depth=1, nerf_max_freqs=4, nerf_tile_size=0,
                 nerf_final_head_type="linear", nerf_embedder_dtype=torch.float32, use_x0=False,
                 use_sequential_txt_ids=False)
# HunyuanVideo as an image model: 3-D patches over one latent frame.
_HUNYUAN = dict(image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32,
                hidden_size=64, mlp_ratio=2.0, num_heads=4, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6],
                theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=False, byt5=False, meanflow=False,
                use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False)
# HunyuanVideo 1.5: 32-channel latents, the model input concatenates an image condition and a mask (65 channels).
_HUNYUAN15 = dict(_HUNYUAN, in_channels=65, out_channels=32, vec_in_dim=None, use_cond_type_embedding=True)
# Z-Image-Turbo-shaped NextDiT: QK-norm, Z-Image modulation (its 256-wide timestep embedding needs dim >= 256),
# image tokens padded to a multiple of 32.
_ZIMAGE = dict(image_model="lumina2", patch_size=2, in_channels=16, dim=256, n_layers=2, n_refiner_layers=1,
               n_heads=4, n_kv_heads=4, qk_norm=True, cap_feat_dim=32, axes_dims=[16, 24, 24],
               axes_lens=[64, 64, 64], rope_theta=256.0, z_image_modulation=True, time_scale=1000.0,
               pad_tokens_multiple=32)
# Krea2: single-stream blocks with grouped-query attention (4 query heads, 2 key/value heads), a text-fusion
# transformer in front.
_KREA2 = dict(image_model="krea2", features=64, heads=4, kvheads=2, multiplier=2, layers=2, patch=2,
              channels=16, txtdim=32, txtlayers=1, txtheads=2, txtkvheads=2)

# Cosmos Predict2 text-to-image (MiniTrainDIT): the real checkpoints' settings (3-D RoPE with NTK extrapolation,
# AdaLN-LoRA, a padding-mask channel, 2x2 patches over one latent frame) at width 64, 4 heads, 2 blocks.
_COSMOS = dict(image_model="cosmos_predict2", max_img_h=240, max_img_w=240, max_frames=128, in_channels=16,
               out_channels=16, patch_spatial=2, patch_temporal=1, concat_padding_mask=True, model_channels=64,
               num_blocks=2, num_heads=4, crossattn_emb_channels=32, pos_emb_cls="rope3d", pos_emb_learnable=True,
               pos_emb_interpolation="crop", min_fps=1, max_fps=30, use_adaln_lora=True, adaln_lora_dim=16,
               rope_h_extrapolation_ratio=4.0, rope_w_extrapolation_ratio=4.0, rope_t_extrapolation_ratio=1.0,
               extra_per_block_abs_pos_emb=False, rope_enable_fps_modulation=False)
# Sampling settings of ComfyUI's supported-model entries (comfy/supported_models.py) for the two.
_COSMOS_SAMPLING = {"sigma_data": 1.0, "sigma_max": 80.0, "sigma_min": 0.002}
_ANIMA_SAMPLING = {"multiplier": 1.0, "shift": 3.0}


def _small_llm_adapter(diffusion_model) -> None:
    """Anima builds a full-size text adapter (1024 wide, 6 layers: 130M parameters) in its constructor; it only
    runs on conditionings that carry t5xxl ids, which these tests do not use. A one-layer 32-wide adapter of the
    same class keeps the model's class and structure without a 500 MB model per test module."""
    import comfy.ops
    from comfy.ldm.anima.model import LLMAdapter
    diffusion_model.llm_adapter = LLMAdapter(source_dim=32, target_dim=32, model_dim=32, num_layers=1,
                                             num_heads=2, operations=comfy.ops.disable_weight_init)


def _params(cfg: dict, params_class) -> dict:
    fields = {f.name for f in dataclasses.fields(params_class)}
    missing = fields - set(cfg)
    assert not missing, f"tiny model config lacks {sorted(missing)} (this ComfyUI's {params_class.__name__})"
    return {k: v for k, v in cfg.items() if k in fields or k == "image_model"}


def build(comfy, family: str, seed: int = 4321):
    """A ModelPatcher around a tiny model of `family` (see FAMILIES), fp32 on the CPU."""
    import comfy.latent_formats as lf
    import comfy.model_base as mb
    if family == "chroma":
        from comfy.ldm.chroma.model import ChromaParams
        unet_config, model_class, latent_format = _params(_CHROMA, ChromaParams), mb.Chroma, lf.Flux
    elif family == "chroma_radiance":
        from comfy.ldm.chroma_radiance.model import ChromaRadianceParams
        unet_config = _params(_RADIANCE, ChromaRadianceParams)
        model_class, latent_format = mb.ChromaRadiance, lf.ChromaRadiance
    elif family == "hunyuan_video":
        from comfy.ldm.hunyuan_video.model import HunyuanVideoParams
        unet_config = _params(_HUNYUAN, HunyuanVideoParams)
        model_class, latent_format = mb.HunyuanVideo, lf.HunyuanVideo
    elif family == "hunyuan_video15":
        from comfy.ldm.hunyuan_video.model import HunyuanVideoParams
        unet_config = _params(_HUNYUAN15, HunyuanVideoParams)
        model_class, latent_format = mb.HunyuanVideo15, lf.HunyuanVideo15
    elif family == "krea2":
        unet_config, model_class, latent_format = dict(_KREA2), mb.Krea2, lf.Wan21
    elif family == "zimage":
        unet_config, model_class, latent_format = dict(_ZIMAGE), mb.Lumina2, lf.Flux
    elif family in ("cosmos", "anima"):
        unet_config = dict(_COSMOS, image_model="anima" if family == "anima" else "cosmos_predict2")
        model_class = mb.Anima if family == "anima" else mb.CosmosPredict2
        latent_format = lf.Wan21
    elif family == "qwen":
        unet_config = dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16,
                           num_layers=4, attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32,
                           axes_dims_rope=(4, 6, 6))
        model_class, latent_format = mb.QwenImage, lf.Wan21
    else:
        unet_config = _flux_config(comfy, family == "flux2")
        # Flux.2 runs the same diffusion model class (comfy.ldm.flux.model.Flux, which the family adapter keys
        # on) with Flux.2's block layout; its BaseModel (model_base.Flux2) differs only by padding the text to
        # 512 tokens, which would make this 64-token image 8x slower on the CPU and bury the method's effect
        # under 500 zero text keys, so the tiny Flux.2 uses model_base.Flux.
        model_class = mb.Flux
        latent_format = lf.Flux2 if family == "flux2" else lf.Flux

    class Tiny(comfy.supported_models_base.BASE):
        pass

    Tiny.unet_config = unet_config
    Tiny.unet_extra_config = {}
    Tiny.latent_format = latent_format
    if family in ("cosmos", "anima"):
        Tiny.sampling_settings = _ANIMA_SAMPLING if family == "anima" else _COSMOS_SAMPLING
    config = Tiny(dict(unet_config))
    config.set_inference_dtype(torch.float32, None)
    model = model_class(config, device=torch.device("cpu"))
    if family == "anima":
        _small_llm_adapter(model.diffusion_model)
    init_weights(model.diffusion_model, torch.Generator().manual_seed(seed))
    model.eval()
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def conditioning(family: str, seed: int = 99, tokens: int = 8):
    g = torch.Generator().manual_seed(seed)

    def one():
        extra = {"pooled_output": torch.randn(1, 32, generator=g), "guidance": 3.5} \
            if family in ("flux1", "hunyuan_video", "hunyuan_video15") else {}
        return [[torch.randn(1, tokens, 32, generator=g), extra]]
    return one(), one()


def clip_latent(family: str, frames: int = 4, seed: int = 7):
    """A clip with smooth frame-to-frame change: 64 image tokens per frame in every family."""
    shape = {"flux1": (16, 16, 16), "flux2": (128, 8, 8), "qwen": (16, 1, 16, 16), "chroma": (16, 16, 16),
             "chroma_radiance": (3, 32, 32), "hunyuan_video": (16, 1, 16, 16), "zimage": (16, 16, 16),
             "hunyuan_video15": (32, 1, 16, 16), "krea2": (16, 1, 16, 16),
             "cosmos": (16, 1, 16, 16), "anima": (16, 1, 16, 16),
             "zimage_padded": (16, 12, 16)}[family]
    g = torch.Generator().manual_seed(seed)
    base, drift = torch.randn(1, *shape, generator=g), torch.randn(1, *shape, generator=g)
    return {"samples": torch.cat([base + 0.3 * k * drift for k in range(frames)])}

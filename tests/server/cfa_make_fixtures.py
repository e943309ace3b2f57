"""Generate the random models and media the real-server tests run on.

Run as a script with ComfyUI's Python (it imports ComfyUI's model classes only to get the exact
layer shapes and key names; nothing is downloaded):

    python cfa_make_fixtures.py --comfyui $COMFYUI_PATH --base /tmp/somewhere

It writes, under --base (a ComfyUI ``--base-directory``):

    models/checkpoints/cfa_random_sd15.safetensors       shallow SD1.5-shaped U-Net + CLIP-L + SD VAE
    models/controlnet/cfa_random_sd15_controlnet.safetensors   matching SD1.5-shaped ControlNet
    models/diffusion_models/cfa_random_flux1.safetensors   tiny Flux.1-dev-shaped DiT (hidden 128, 1 + 1 blocks)
    models/vae/cfa_random_flux_vae.safetensors          16-channel VAE in the layout of Flux's ae.safetensors
    models/text_encoders/cfa_random_clip_l.safetensors  the checkpoint's CLIP-L as a text-encoder file
    input/cfa_clip.mp4                                  short synthetic clip (moving shapes)
    input/cfa_reference.png                             a still image for the reference workflow

and prints one JSON line describing them. All weights are random (std 1/sqrt(fan_in)), fp16 on disk,
seeded, and must never be committed (the repo's .gitignore excludes *.safetensors).

The U-Net is "shallow": one resolution level (channel_mult [1], one res block, one transformer per
block) but model_channels 320 and context_dim 768, so ComfyUI's checkpoint detection picks SD1.5.
The CLIP-L and the VAE have their real SD1.5 shapes (ComfyUI builds them from fixed configs).

The tiny Flux is what ComfyUI's model detection reads as Flux.1 [dev] (double/single blocks, guidance
embedding, one 128-wide head), but its text input takes CLIP-L's 768 channels instead of T5-XXL's 4096:
ComfyUI builds T5-XXL from a fixed config (4.7 billion parameters whatever the file holds), far too large to
generate or run in a test, so the Flux example's test swaps DualCLIPLoader for CLIPLoader on this CLIP-L.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

UNET_CONFIG = {
    # exactly what comfy.model_detection derives from such a state dict, plus SD15's extras
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [1],
    "channel_mult": [1],
    "transformer_depth": [1],
    "transformer_depth_output": [1, 1],
    "transformer_depth_middle": 1,
    "context_dim": 768,
    "num_heads": 8,
    "num_head_channels": -1,
    "use_linear_in_transformer": False,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "use_checkpoint": False,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}

FLUX_CONFIG = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=768,
                   hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1,
                   axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True,
                   txt_ids_dims=[])

CHECKPOINT_NAME = "cfa_random_sd15.safetensors"
FLUX_NAME = "cfa_random_flux1.safetensors"
FLUX_VAE_NAME = "cfa_random_flux_vae.safetensors"
CLIP_L_NAME = "cfa_random_clip_l.safetensors"
CONTROLNET_NAME = "cfa_random_sd15_controlnet.safetensors"
VIDEO_NAME = "cfa_clip.mp4"
IMAGE_NAME = "cfa_reference.png"


def _init_module(module, generator, torch):
    """Every parameter and floating buffer gets a value: ComfyUI's ops leave weights uninitialised."""
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + list(module.named_buffers()):
            if not p.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim <= 1:
                if leaf == "bias" or "bias" in leaf:
                    p.zero_()
                elif leaf in ("weight", "gamma", "scale") or "norm" in name:
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, 0.02, generator=generator)
            else:
                fan_in = math.prod(p.shape[1:])
                p.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)


def _half(sd, torch):
    return {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def make_checkpoint(path, seed, torch):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.ldm.models.autoencoder import AutoencoderKL
    import comfy.sd1_clip

    g = torch.Generator().manual_seed(seed)
    sd = {}

    unet = UNetModel(**UNET_CONFIG, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)
    _init_module(unet, g, torch)
    sd.update({"model.diffusion_model." + k: v for k, v in unet.state_dict().items()})
    del unet

    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32,
                                      model_options={"custom_operations": comfy.ops.disable_weight_init})
    _init_module(clip, g, torch)
    for k, v in clip.state_dict().items():
        if not k.startswith("transformer."):
            continue  # logit_scale etc. are not part of an SD1.5 checkpoint
        if k == "transformer.text_projection.weight":
            continue
        sd["cond_stage_model." + k] = v
    del clip

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    _init_module(vae, g, torch)
    sd.update({"first_stage_model." + k: v for k, v in vae.state_dict().items()})
    del vae

    _save(path, _half(sd, torch))
    return sd


def make_clip_l(checkpoint_sd, path, torch):
    """The checkpoint's CLIP-L under the names of a stand-alone text-encoder file."""
    prefix = "cond_stage_model.transformer."
    sd = {k[len(prefix):]: v.to(torch.float16) if v.is_floating_point() else v
          for k, v in checkpoint_sd.items() if k.startswith(prefix)}
    # a stand-alone CLIP-L file carries its pooled-output projection (SD1.5 checkpoints leave it out)
    sd["text_projection.weight"] = torch.eye(768, dtype=torch.float16)
    _save(path, sd)


def make_flux(path, seed, torch):
    """Tiny Flux.1 [dev]-shaped diffusion model (see the module docstring), keys as in a diffusion-model file."""
    import dataclasses
    import comfy.ops
    from comfy.ldm.flux.model import Flux, FluxParams
    fields = {f.name for f in dataclasses.fields(FluxParams)}   # 0.3.64 knows fewer fields than 0.30.0
    config = {k: v for k, v in FLUX_CONFIG.items() if k in fields}
    kwargs = {"image_model": "flux"} if "image_model" in Flux.__init__.__code__.co_varnames else {}
    g = torch.Generator().manual_seed(seed + 2)
    model = Flux(**config, **kwargs, dtype=torch.float32, device="cpu", operations=comfy.ops.disable_weight_init)
    _init_module(model, g, torch)
    sd = model.state_dict()
    _save(path, _half(sd, torch))
    return len(sd)


def make_flux_vae(path, seed, torch):
    """A 16-channel VAE without quant convs, as Flux's ae.safetensors is laid out (real encoder width)."""
    from comfy.ldm.models.autoencoder import AutoencodingEngine
    ddconfig = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    vae = AutoencodingEngine(
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": ddconfig},
        decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": ddconfig})
    _init_module(vae, torch.Generator().manual_seed(seed + 3), torch)
    sd = vae.state_dict()
    _save(path, _half(sd, torch))
    return len(sd)


def make_controlnet(path, seed, torch):
    import comfy.ops
    from comfy.cldm.cldm import ControlNet

    g = torch.Generator().manual_seed(seed + 1)
    cfg = dict(UNET_CONFIG)
    cfg.pop("out_channels")
    cfg.pop("use_temporal_resblock")
    cfg.pop("use_temporal_attention")
    net = ControlNet(**cfg, hint_channels=3, dtype=torch.float32, device="cpu",
                     operations=comfy.ops.disable_weight_init)
    _init_module(net, g, torch)
    sd = {"control_model." + k: v for k, v in net.state_dict().items()}
    _save(path, _half(sd, torch))
    return len(sd)


def _save(path, sd):
    from safetensors.torch import save_file
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    save_file(sd, tmp, metadata={"cfa_fixture": "random weights for tests, do not distribute"})
    os.replace(tmp, path)


def _frame(i, n, width, height):
    """A simple synthetic frame: gradient background with a square moving left to right."""
    import numpy as np
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 60 + 120 * x / max(width - 1, 1)
    img[..., 1] = 50 + 100 * y / max(height - 1, 1)
    img[..., 2] = 140.0
    side = max(width // 4, 4)
    x0 = int((width - side) * i / max(n - 1, 1))
    y0 = height // 2 - side // 2
    img[y0:y0 + side, x0:x0 + side] = (240, 220, 40)
    return img.clip(0, 255).astype(np.uint8)


def make_video(path, frames, width, height, fps):
    import av
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part.mp4"
    with av.open(tmp, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(_frame(i, frames, width, height), format="rgb24")
            for packet in stream.encode(f):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


def make_image(path, width, height):
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(_frame(1, 3, width, height)[:, ::-1].copy()).save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfyui", required=True, help="ComfyUI checkout (COMFYUI_PATH)")
    ap.add_argument("--base", required=True, help="folder to fill (a ComfyUI --base-directory)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--fps", type=int, default=8)
    a = ap.parse_args(argv)

    sys.path.insert(0, os.path.abspath(a.comfyui))
    sys.argv = [sys.argv[0], "--cpu"]  # comfy.cli_args parses sys.argv on import
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import torch
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    t0 = time.time()
    ckpt = os.path.join(a.base, "models", "checkpoints", CHECKPOINT_NAME)
    cnet = os.path.join(a.base, "models", "controlnet", CONTROLNET_NAME)
    video = os.path.join(a.base, "input", VIDEO_NAME)
    image = os.path.join(a.base, "input", IMAGE_NAME)
    ckpt_sd = make_checkpoint(ckpt, a.seed, torch)
    n_ckpt = len(ckpt_sd)
    make_clip_l(ckpt_sd, os.path.join(a.base, "models", "text_encoders", CLIP_L_NAME), torch)
    del ckpt_sd
    n_cnet = make_controlnet(cnet, a.seed, torch)
    make_flux(os.path.join(a.base, "models", "diffusion_models", FLUX_NAME), a.seed, torch)
    make_flux_vae(os.path.join(a.base, "models", "vae", FLUX_VAE_NAME), a.seed, torch)
    make_video(video, a.frames, a.width, a.height, a.fps)
    make_image(image, a.width, a.height)
    print(json.dumps({
        "checkpoint": CHECKPOINT_NAME, "checkpoint_keys": n_ckpt, "checkpoint_bytes": os.path.getsize(ckpt),
        "controlnet": CONTROLNET_NAME, "controlnet_keys": n_cnet,
        "flux": FLUX_NAME, "flux_vae": FLUX_VAE_NAME, "clip_l": CLIP_L_NAME,
        "video": VIDEO_NAME, "image": IMAGE_NAME, "frames": a.frames, "width": a.width, "height": a.height,
        "fps": a.fps, "seconds": round(time.time() - t0, 2),
    }))


if __name__ == "__main__":
    main()

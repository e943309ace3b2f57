"""The small model trained in this repository (tests/fixtures/trained/): its shapes, and how to load it.

Two parts, both ComfyUI architectures so every path of the pack runs on them:
- an autoencoder with the architecture of TAESD (`comfy.taesd.taesd`: 8x down, 4 latent channels, ~1.2 M
  parameters a side), trained from scratch here. ComfyUI recognises it by its keys (`taesd_encoder.*`,
  `taesd_decoder.*`), so `comfy.sd.VAE` and the standard *Load VAE* node load the file as it is;
- ComfyUI's SD U-Net (`openaimodel.UNetModel`) in that latent space, 3 levels, self-attention at every level,
  an EPS model on SD's discrete schedule. It is far smaller than SD1.5 (ComfyUI detects SD1.5 by
  model_channels 320 and context_dim 768, which alone would not fit the 16 MB a fixture may weigh), so it is
  loaded in-process through the model config below (`TrainedSmallUNet`), not through a checkpoint loader.

It is unconditional: trained with an all-zero text context of one token (`empty_conditioning`).
Training: benchmarks/quality/train_small_model.py; model card: tests/fixtures/trained/MODEL_CARD.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
FIXTURE_DIR = REPO / "tests" / "fixtures" / "trained"
UNET_FILE = "unet.safetensors"
VAE_FILE = "vae.safetensors"
REGENERATE = ("regenerate it on a GPU machine with `python benchmarks/quality/train_small_model.py "
              "--comfyui <ComfyUI checkout> --footage <folder from benchmarks/quality/prepare_footage.py> "
              "--out tests/fixtures/trained` (see tests/fixtures/trained/MODEL_CARD.md)")

CONTEXT_DIM = 32
# ComfyUI's unet_config keys (the same dict a supported model declares); UNetModel takes them as arguments.
UNET_CONFIG = {
    "in_channels": 4, "out_channels": 4, "model_channels": 64, "channel_mult": [1, 1, 2],
    "num_res_blocks": [1, 1, 1], "transformer_depth": [1, 1, 1], "transformer_depth_output": [1, 1, 1, 1, 1, 1],
    "transformer_depth_middle": 1, "context_dim": CONTEXT_DIM, "num_head_channels": 32, "num_heads": -1,
    "use_spatial_transformer": True, "use_linear_in_transformer": True, "legacy": False,
    "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False,
    "image_size": 32,
}
# SD's discrete schedule (what ComfyUI's EPS models default to)
LINEAR_START, LINEAR_END, TIMESTEPS = 0.00085, 0.012, 1000


class FixtureMissing(FileNotFoundError):
    pass


def fixture_path(name: str, folder: Path | None = None) -> Path:
    path = Path(folder or FIXTURE_DIR) / name
    if not path.is_file():
        raise FixtureMissing(f"trained model file missing: {path}; {REGENERATE}")
    return path


def schedule_sigmas() -> torch.Tensor:
    """Sigma of each of the 1000 discrete timesteps (ComfyUI's ModelSamplingDiscrete, linear betas)."""
    betas = torch.linspace(LINEAR_START ** 0.5, LINEAR_END ** 0.5, TIMESTEPS, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt().float()


def read_metadata(folder: Path | None = None) -> dict:
    """The training record stored in the U-Net file (latent shift/scale, steps, seconds, ...)."""
    from safetensors import safe_open

    with safe_open(str(fixture_path(UNET_FILE, folder)), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("cfa_training", "{}"))


def empty_conditioning(batch: int = 1) -> torch.Tensor:
    """The fixed context the model was trained with (one all-zero token)."""
    return torch.zeros(batch, 1, CONTEXT_DIM)


def comfy_model(comfy_modules=None, folder: Path | None = None, dtype=torch.float32, device="cpu"):
    """A ComfyUI ModelPatcher around the trained U-Net (ComfyUI must already be importable)."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models_base
    import comfy.utils

    meta = read_metadata(folder)
    shift, scale = float(meta["latent_shift"]), float(meta["latent_scale"])

    class TrainedLatent(comfy.latent_formats.LatentFormat):
        """The trained autoencoder's latents, shifted and scaled to unit variance for the U-Net."""
        latent_channels = 4

        def __init__(self):
            self.scale_factor = scale
            self.shift_factor = shift

        def process_in(self, latent):
            return (latent - self.shift_factor) * self.scale_factor

        def process_out(self, latent):
            return latent / self.scale_factor + self.shift_factor

    class TrainedSmallUNet(comfy.supported_models_base.BASE):
        unet_config = dict(UNET_CONFIG)
        unet_extra_config = {}
        latent_format = TrainedLatent

    config = TrainedSmallUNet(dict(UNET_CONFIG))
    config.set_inference_dtype(dtype, None)
    device = torch.device(device)
    model = comfy.model_base.BaseModel(config, device=device)
    sd = comfy.utils.load_torch_file(str(fixture_path(UNET_FILE, folder)))
    missing, unexpected = model.diffusion_model.load_state_dict(
        {k: v.to(dtype) for k, v in sd.items()}, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{fixture_path(UNET_FILE, folder)} does not fit UNET_CONFIG "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]}); {REGENERATE}")
    model.diffusion_model.to(device)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def comfy_vae(folder: Path | None = None):
    """The trained autoencoder as ComfyUI's VAE (what the Load VAE node builds from the same file)."""
    import comfy.sd
    import comfy.utils

    sd = comfy.utils.load_torch_file(str(fixture_path(VAE_FILE, folder)))
    return comfy.sd.VAE(sd=sd)


def unconditional(batch_positive: int = 1):
    """ComfyUI conditioning lists (positive, negative) holding the trained empty context."""
    return [[empty_conditioning(batch_positive), {}]], [[empty_conditioning(batch_positive), {}]]

"""Small files that some core MODEL nodes load (a hypernetwork, a LoRA), generated for the tiny U-Net in a
temporary folder registered with ComfyUI's folder_paths: nothing downloaded, nothing committed."""
from __future__ import annotations

from pathlib import Path

import torch

HYPERNETWORK = "cfa_tiny_hypernetwork.pt"
LORA = "cfa_tiny_lora.safetensors"


def hypernetwork_file(folder: Path) -> Path:
    """A hypernetwork in the format core's Hypernetwork Loader reads: per attention width (the tiny U-Net's
    32 and 64 channels), one small MLP for keys and one for values (linear activation, no dropout)."""
    g = torch.Generator().manual_seed(2025)
    data = {"activation_func": "linear", "is_layer_norm": False, "use_dropout": False}
    for width in (32, 64):
        pair = []
        for _ in range(2):   # keys, values
            pair.append({"linear.0.weight": torch.randn(width, width, generator=g) / width ** 0.5,
                         "linear.0.bias": torch.randn(width, generator=g) * 0.1})
        data[width] = pair
    path = folder / HYPERNETWORK
    torch.save(data, path)
    return path


def lora_file(folder: Path, diffusion_model) -> Path:
    """A rank-2 LoRA on the attention projections of the tiny U-Net, in the generic key naming core's LoRA
    loader maps (`diffusion_model.<module>.lora_up/down.weight`)."""
    import comfy.utils
    g = torch.Generator().manual_seed(2026)
    sd = {}
    for name, module in diffusion_model.named_modules():
        if name.endswith(("attn1.to_k", "attn1.to_v", "attn1.to_q", "attn2.to_q")) and \
                isinstance(module, torch.nn.Linear):
            out_f, in_f = module.weight.shape
            key = f"diffusion_model.{name}"
            sd[f"{key}.lora_down.weight"] = torch.randn(2, in_f, generator=g) / in_f ** 0.5
            sd[f"{key}.lora_up.weight"] = torch.randn(out_f, 2, generator=g) / 2 ** 0.5
    path = folder / LORA
    comfy.utils.save_torch_file(sd, str(path))
    return path


def register(folder: Path, diffusion_model) -> dict:
    """Write both files into `folder` and register it for ComfyUI; returns {input name: file name}."""
    import folder_paths
    hypernetwork_file(folder)
    lora_file(folder, diffusion_model)
    folder_paths.add_model_folder_path("hypernetworks", str(folder))
    folder_paths.add_model_folder_path("loras", str(folder))
    return {"hypernetwork_name": HYPERNETWORK, "lora_name": LORA}

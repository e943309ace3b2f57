"""In-process ComfyUI fixtures: ComfyUI imported from COMFYUI_PATH on the CPU, the pack loaded the way ComfyUI
loads custom nodes, and a tiny randomly initialised SD-style U-Net (no downloads)."""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from graph_helpers import registry
from tiny_weights import init_weights

REPO = Path(__file__).resolve().parents[2]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
SKIP_REASON = ("ComfyUI integration tests skipped: set COMFYUI_PATH to a ComfyUI checkout "
               "(bash .ci/run does this when $HOME/ComfyUI exists)")


def comfyui_available() -> bool:
    return bool(COMFYUI_PATH) and (Path(COMFYUI_PATH) / "comfy" / "model_patcher.py").is_file()


def pytest_collection_modifyitems(config, items):
    if comfyui_available():
        return
    marker = pytest.mark.skip(reason=SKIP_REASON)
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(marker)


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI's modules, CPU-only, with this pack loaded as a custom node."""
    if not comfyui_available():
        pytest.skip(SKIP_REASON)
    if COMFYUI_PATH not in sys.path:
        sys.path.insert(0, COMFYUI_PATH)
    from comfy.cli_args import args  # must precede anything that imports comfy.model_management
    args.cpu = True
    import comfy.model_base
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sample
    import comfy.supported_models_base
    import comfy.latent_formats
    import nodes as comfy_nodes  # ComfyUI's nodes.py (our nodes/ is never importable as `nodes`)

    loaded = asyncio.run(comfy_nodes.load_custom_node(str(REPO), module_parent="custom_nodes"))
    assert loaded, "ComfyUI failed to load the pack (see the log above)"
    mapping = comfy_nodes.NODE_CLASS_MAPPINGS
    return SimpleNamespace(
        nodes=comfy_nodes, mapping=mapping,
        model_base=comfy.model_base, model_patcher=comfy.model_patcher,
        model_management=comfy.model_management, sample=comfy.sample,
        supported_models_base=comfy.supported_models_base, latent_formats=comfy.latent_formats,
        Store=mapping["CFA_StoreReferenceAttention"], Patch=mapping["CFA_CrossFrameAttentionPatch"],
        Sampler=mapping["CFA_BatchVideoSampler"],
    )


@pytest.fixture(scope="session")
def tiny_model(comfy):
    """A ModelPatcher around a tiny SD1.5-style U-Net: 2 levels, one res block and one transformer each."""

    class TinySD(comfy.supported_models_base.BASE):
        unet_config = {
            "context_dim": 32, "model_channels": 32, "in_channels": 4, "out_channels": 4,
            "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
            "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
            "use_spatial_transformer": True, "use_linear_in_transformer": False, "legacy": False,
            "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False,
            "image_size": 32, "num_head_channels": 16, "num_heads": -1,
        }
        unet_extra_config = {}
        latent_format = comfy.latent_formats.SD15

    config = TinySD(TinySD.unet_config)
    config.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.BaseModel(config, device=torch.device("cpu"))
    init_weights(model.diffusion_model, torch.Generator().manual_seed(1234))
    model.eval()
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


@pytest.fixture(scope="session")
def conds():
    """Random positive/negative conditioning for the tiny U-Net (context_dim 32)."""
    g = torch.Generator().manual_seed(99)
    positive = [[torch.randn(1, 8, 32, generator=g), {}]]
    negative = [[torch.randn(1, 8, 32, generator=g), {}]]
    return positive, negative


@pytest.fixture(scope="session")
def clip_latent():
    """A 5-frame 'video' latent (16x16 latent = 128x128 px) with smooth frame-to-frame change."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(1, 4, 16, 16, generator=g)
    drift = torch.randn(1, 4, 16, 16, generator=g)
    frames = torch.cat([base + 0.3 * k * drift for k in range(5)])
    return {"samples": frames}


@pytest.fixture(scope="session")
def recording_control(comfy):
    import comfy.controlnet

    class RecordingControl(comfy.controlnet.ControlBase):
        """Adds nothing to the U-Net; records which hints each model call was given."""

        def __init__(self, log, name):
            super().__init__()
            self.log, self.name = log, name

        def copy(self):
            c = RecordingControl(self.log, self.name)
            self.copy_to(c)
            return c

        def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
            if self.previous_controlnet is not None:
                self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
            per_chunk = x_noisy.shape[0] // batched_number
            ids = comfy.controlnet.broadcast_image_to(self.cond_hint_original, per_chunk, 1)[:, 0, 0, 0]
            self.log.append((self.name, tuple(int(v) for v in ids)))
            return None

    return RecordingControl


# --- DiT families (test_dit.py, test_attention_override.py, test_families.py) ---------------------------------
@pytest.fixture(scope="module")
def hook(comfy):
    """Whether this ComfyUI's DiT blocks call the pre-attention hook (the families' behavioural probes)."""
    return all(f.hook_present() for f in registry(comfy).REGISTRY if f.way.since)


@pytest.fixture(scope="module")
def needs_hook(hook, comfy):
    if not hook:
        import comfyui_version
        pytest.skip(f"ComfyUI {comfyui_version.__version__} has no pre-attention hook in DiT blocks (added by "
                    "0.30.0): DiT cross-frame attention is refused there (see test_dit_refused_without_the_hook)")

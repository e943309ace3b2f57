"""Chroma and Chroma Radiance (pixel space): models of their own (`comfy.ldm.chroma.model.Chroma`,
`comfy.ldm.chroma_radiance.model.ChromaRadiance`) around Flux's double- and single-stream blocks, which set
the same block_type / block_index / img_slice: Flux's way in, probe and block kinds."""
from .base import Family
from .flux import FLUX_BLOCKS, FLUX_PRESETS, SINGLE, probe_flux_blocks
from .way_dit_pre_attention import DiTPreAttentionWay

FAMILY = Family(
    name="Chroma",
    models="Chroma and Chroma Radiance",
    model_classes=(("comfy.ldm.chroma.model", "Chroma"), ("comfy.ldm.chroma_radiance.model", "ChromaRadiance")),
    way=DiTPreAttentionWay(),
    block_lists=FLUX_BLOCKS,
    presets=FLUX_PRESETS,
    default_blocks=lambda diffusion_model: SINGLE,
    default_text="single",
    probe=probe_flux_blocks,
)

"""Chroma and Chroma Radiance (pixel space): models of their own (`comfy.ldm.chroma.model.Chroma`,
`comfy.ldm.chroma_radiance.model.ChromaRadiance`) around Flux's double- and single-stream blocks."""
from .flux import flux_blocks_family

FAMILY = flux_blocks_family(
    "Chroma", "Chroma and Chroma Radiance",
    (("comfy.ldm.chroma.model", "Chroma"), ("comfy.ldm.chroma_radiance.model", "ChromaRadiance")))

"""The registry of model families: the one place that says which models cross-frame attention serves.

Each family is one declaration in a file of its own (see base.Family); each way into self-attention is one
file (`way_*.py`). Everything that names families is derived from REGISTRY: the blocks menu and its tooltip
(nodes/schema.py), the unsupported-model error, the dispatch in nodes/comfy_patch.py and README's family table
(tests/comfy/test_families.py compares README with `families_table()`). To add a family, see CONTRIBUTING.md.
"""
from __future__ import annotations

from ...attention.options import AUTO_BLOCKS, parse_blocks
from .base import CrossFramePatch, Family, Way, comfyui_version  # noqa: F401 (the registry's vocabulary)
from . import chroma, cosmos, flux, hunyuan_video, krea2, qwen_image, sd_unet, zimage

# Tried in order, first match wins; the SD U-Net family comes last and takes every other model (its check
# refuses models in which it would reach no self-attention).
REGISTRY: tuple[Family, ...] = (flux.FAMILY, chroma.FAMILY, hunyuan_video.FAMILY, qwen_image.FAMILY,
                                zimage.FAMILY, krea2.FAMILY, cosmos.FAMILY, sd_unet.FAMILY)
FALLBACK = sd_unet.FAMILY


def family_of(model) -> Family:
    """The family of `model` (a comfy BaseModel), by the class of its diffusion model."""
    diffusion_model = getattr(model, "diffusion_model", None)
    if diffusion_model is None:
        return FALLBACK
    return next((f for f in REGISTRY if f.model_classes and f.matches(diffusion_model)), FALLBACK)


def resolve_blocks(model, choice: str, who: str = "Cross-frame attention") -> frozenset:
    """The blocks a node's choice means on `model` (a ModelPatcher): 'auto' -> the family's default; any other
    choice parsed and checked against the family's block kinds (a U-Net group on a DiT, or the reverse, is
    refused here, when the node runs, not when sampling reaches it)."""
    inner = model.model
    family = family_of(inner)
    if str(choice).strip() == AUTO_BLOCKS:
        return family.default_blocks(getattr(inner, "diffusion_model", None))
    blocks = parse_blocks(choice, who)
    if family is FALLBACK:   # a model no declaration recognised: refuse it as such, not for its block names
        family.check(inner, family.block_names(), who)
    if family.names_blocks_of_another_kind(blocks):
        raise family.kinds_error(blocks, who)
    return blocks


def check_supported(model, blocks: frozenset, who: str) -> None:
    """Refuse, rather than silently do nothing, where no patched self-attention would ever run."""
    family_of(model).check(model, blocks, who)


def installed_patch(model_patcher) -> CrossFramePatch | None:
    """The pack's patch already on a ModelPatcher (by any way in), or None."""
    ways = {type(f.way): f.way for f in REGISTRY}.values()
    return next((p for p in (w.installed(model_patcher.model_options) for w in ways) if p is not None), None)


def shown_in_order() -> tuple[Family, ...]:
    """The families as menus, errors and README list them: SD U-Nets first, then the DiTs in registry order."""
    return (FALLBACK,) + tuple(f for f in REGISTRY if f is not FALLBACK)


def block_choices() -> tuple[str, ...]:
    """The blocks menu: auto, then every family's presets (each once)."""
    choices = [AUTO_BLOCKS]
    for family in shown_in_order():
        choices += [p for p in family.presets if p not in choices]
    return tuple(choices)


def _since(family: Family) -> str:
    return f" on ComfyUI {family.way.since} or newer" if family.way.since else " (any ComfyUI)"


def supported_text() -> str:
    """One sentence naming every family, for errors."""
    return "; ".join(f"{f.models}{_since(f)}" for f in shown_in_order())


def blocks_tooltip() -> str:
    defaults = "; ".join(f"{f.name}: {f.default_text}" for f in shown_in_order())
    kinds = "; ".join(f"{f.name}: {' / '.join(f.block_lists)}" for f in shown_in_order())
    return ("Blocks whose self-attention looks at the anchor frames. auto: the model's default -- "
            f"{defaults}. Block kinds per family -- {kinds}; join kinds with '+', and give a DiT kind an index "
            "range like double[30:] to take part of it. More blocks: closer to the anchors, slower; for SD "
            "U-Nets, adding input or middle makes frames follow the anchors more closely and costs more memory.")


def families_table() -> str:
    """README's family table (Markdown), derived from the registry."""
    rows = ["| family | models | ComfyUI | way into self-attention | block kinds | blocks = auto |",
            "|---|---|---|---|---|---|"]
    for f in shown_in_order():
        since = f"{f.way.since}+" if f.way.since else "any"
        rows.append(f"| {f.name} | {f.models} | {since} | {f.way.name} | {' / '.join(f.block_lists)} | "
                    f"{f.default_text} |")
    return "\n".join(rows)

"""What every model family declares, and the base of the callables that serve them.

A family is one declaration (see the other files of this folder, one per family): how ComfyUI's model is
recognised, which way into its self-attention serves it (a `Way`: one file per hook kind), its block kinds,
the block presets offered in the blocks menu, and what blocks='auto' means. The registry (`__init__.py`)
lists them; the nodes, the blocks menu and its tooltip, the unsupported-model error and README's family table
are all derived from it.

A family's patch turns its hook call into one `FrameRun.kv` call ("these rows are frames x conditionings,
these are the image tokens, this is the layer") and the answer back into what the hook expects. Where a frame's
keys come from is decided in the core (attention/run.py, attention/assembly.py), never here.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Callable

from ...attention import FrameRun
from ...attention.errors import CrossFrameError
from ...attention.options import block_names, block_selector
from ..animatediff_guard import refuse_animatediff_context
from ..windows import window_frames


def comfyui_version() -> str:
    try:
        import comfyui_version as version_module  # the file at ComfyUI's root
        return str(version_module.__version__)
    except Exception:  # a checkout without the generated file
        return "unknown"


def class_at(path: tuple[str, str]):
    """The class at (module, name), or None when this ComfyUI has no such module or class."""
    module, name = path
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


class CrossFramePatch:
    """Base of the pack's patch callables: the run slot the sampler wrapper fills, and the blocks.

    ModelPatcher.clone() deep-copies model options, patches included; returning self from __deepcopy__
    keeps one object (and one run) shared by every downstream clone, so STORE and LOAD never split.
    """

    family_name = "model"

    def __init__(self, blocks: frozenset, who: str):
        self.blocks = frozenset(blocks)
        self.who = who
        self.selects = block_selector(self.blocks)
        self.run: FrameRun | None = None
        self._window = _WindowCache()

    def __deepcopy__(self, memo):
        return self

    def current_run(self) -> FrameRun:
        run = self.run
        if run is None:
            raise CrossFrameError(
                f"{self.who}: the patched model was evaluated outside a sampling run (no sampler wrapper "
                "ran). Sample it with KSampler, KSamplerAdvanced, SamplerCustom or Batch Video Sampler.")
        return run

    def window_frames(self, extra_options) -> tuple[int, ...] | None:
        """The clip frames this model call holds when the evaluation is split into context windows (core's
        or the pack's, both set `transformer_options["context_window"]`); None = the whole clip. Windows
        that only AnimateDiff-Evolved knows of (its context options) are refused here."""
        window = extra_options.get("context_window")
        if window is None:
            refuse_animatediff_context(extra_options, self.who)
            return None
        return self._window.frames(window)


class _WindowCache(threading.local):
    """The clip frames of the window a model call holds, worked out once per window object (every layer of
    the call gets the same one; per thread, as MultiGPU runs calls in parallel)."""

    def __init__(self):
        self.window = None
        self.value = None

    def frames(self, window):
        if window is None:
            return None
        if window is not self.window:
            self.window, self.value = window, window_frames(window)
        return self.value


class Way:
    """One way into a model's self-attention (U-Net attn1 patch, DiT pre-attention patch, attention override).

    patch_class: the callable it installs; since: the first ComfyUI release known to have the hook (None: all).
    """

    name = "hook"
    patch_class = CrossFramePatch
    since: str | None = None

    def make_patch(self, family: "Family", blocks: frozenset, who: str) -> CrossFramePatch:
        patch = self.patch_class(blocks, who)
        patch.family_name = family.name
        return patch

    def install(self, patcher, patch: CrossFramePatch) -> None:
        """Put `patch` on `patcher` (a clone the pack owns)."""
        patcher.set_model_attn1_patch(patch)

    def installed(self, model_options) -> CrossFramePatch | None:
        """The pack's patch already on a model, if any (so a second cross-frame node can refuse clearly)."""
        patches = model_options.get("transformer_options", {}).get("patches", {}).get("attn1_patch", [])
        return next((p for p in patches if isinstance(p, CrossFramePatch)), None)

    hook_words = "a self-attention hook in its blocks"   # what a ComfyUI without this way lacks, in errors

    def check(self, family: "Family", model, blocks: frozenset, who: str) -> None:
        """Raise a CrossFrameError naming `who` and the fix unless a patched self-attention will run: this
        ComfyUI's blocks must call the hook (the family's probe), and the blocks chosen must exist."""
        from . import supported_text
        if not family.hook_present():
            raise CrossFrameError(
                f"{who}: this is a {family.name} model, but ComfyUI {comfyui_version()} has no {self.hook_words}, "
                f"so cross-frame attention would change nothing. Update ComfyUI to {self.since} or newer. "
                f"Supported: {supported_text()}.")
        self.check_blocks_exist(family, model, blocks, who)

    @staticmethod
    def check_blocks_exist(family: "Family", model, blocks: frozenset, who: str) -> None:
        """For DiTs: the chosen kinds are this family's, and select at least one of the model's blocks."""
        counts = {kind: len(getattr(model.diffusion_model, attr, ())) for kind, attr in family.block_lists.items()}
        have = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        if family.names_blocks_of_another_kind(blocks):
            raise family.kinds_error(blocks, who, f" ({have} blocks)")
        selects = block_selector(blocks)
        if not any(selects(kind, i) for kind, n in counts.items() for i in range(n)):
            raise CrossFrameError(
                f"{who}: blocks '{'+'.join(sorted(blocks))}' select none of this {family.name} model's blocks "
                f"({have}), so cross-frame attention would change nothing. Choose auto, or {family.block_hint()}.")


@dataclass(frozen=True, eq=False)
class Family:
    """One model family, declared once.

    name / models: how errors and README name it, and which checkpoints it covers.
    model_classes: (module, class name) of ComfyUI's diffusion model for it; recognised by exact class (a
        subclass or look-alike may call its blocks otherwise: it gets its own declaration or is refused).
        Empty = the fallback family, tried last (SD U-Nets).
    way: how the patch gets into self-attention (see Way).
    block_lists: block kind (as ComfyUI names it in the hook's extra_options) -> attribute of the diffusion
        model holding those blocks, in index order.
    presets: block choices offered in the blocks menu for this family (any "kind" or "kind[a:b]" mix works).
    default_blocks: what blocks='auto' means for a given diffusion model; default_text says it in words.
    probe: a tiny call that tells whether this ComfyUI's blocks call the hook (True / False / None unknown).
    """

    name: str
    models: str
    way: Way
    block_lists: dict
    presets: tuple
    default_blocks: Callable[[object], frozenset]
    default_text: str
    model_classes: tuple = ()
    probe: Callable[[], "bool | None"] | None = None
    notes: str = ""
    _probed: dict = field(default_factory=dict, repr=False)

    def matches(self, diffusion_model) -> bool:
        return any(cls is not None and type(diffusion_model) is cls for cls in map(class_at, self.model_classes))

    def hook_present(self) -> bool:
        """Whether this ComfyUI's blocks of this family call the hook the way uses. Probed once per process;
        an inconclusive probe (None) counts as present: the end-of-run check still refuses a run in which no
        patched self-attention was reached."""
        if "value" not in self._probed:
            try:
                found = None if self.probe is None else self.probe()
            except Exception:   # a ComfyUI without the model's module: nothing of it can be sampled anyway
                found = None
            self._probed["value"] = found is not False
        return self._probed["value"]

    def block_names(self) -> frozenset:
        return frozenset(self.block_lists)

    def block_hint(self) -> str:
        return ", ".join(self.presets[:-1]) + " or " + self.presets[-1] if len(self.presets) > 1 \
            else self.presets[0]

    def make_patch(self, blocks: frozenset, who: str) -> CrossFramePatch:
        return self.way.make_patch(self, blocks, who)

    def check(self, model, blocks: frozenset, who: str) -> None:
        self.way.check(self, model, blocks, who)

    def names_blocks_of_another_kind(self, blocks: frozenset) -> bool:
        return not block_names(blocks) <= self.block_names()

    def kinds_error(self, blocks: frozenset, who: str, detail: str = "") -> CrossFrameError:
        """The error for blocks naming kinds this family does not have (another family's, or none)."""
        return CrossFrameError(
            f"{who}: blocks '{'+'.join(sorted(blocks))}' are not block kinds of this {self.name} model{detail}. "
            f"Choose auto, or {self.block_hint()}.")

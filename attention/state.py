"""The state object that travels along node links: the recorded anchors of a clip or reference."""
from __future__ import annotations

import weakref

from .bank import AttentionBank
from .errors import CrossFrameError


class CrossFrameState:
    """Recorded attention of a reference (or of a clip so far) that later sampling runs attend to.

    first: the anchor frame's bank (the reference, or the clip's frame 0).
    last: the clip's last frame, when a clip was sampled with its state kept; the next run continues from it.
    blocks: the U-Net block groups recorded.

    ComfyUI deep-copies model options on every ModelPatcher.clone(); a copy of the state would split
    STORE from LOAD, so copying returns the same object.
    """

    def __init__(self, blocks: frozenset, producer: str, empty_hint: str | None = None):
        self.blocks = frozenset(blocks)
        self.producer = producer          # the node that fills it, for messages
        self.empty_hint = empty_hint      # how to fill it, when not by sampling the producer's model
        self.first: AttentionBank | None = None
        self.last: AttentionBank | None = None
        self.runs = 0                     # sampling runs that filled it
        # Filled as a side effect of another node's sampler: a reader must also take that sampler's LATENT
        # by a link, or ComfyUI may run it first or serve it from cache after the reference changed.
        self.needs_reference_latent = False

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    @property
    def filled(self) -> bool:
        return self.first is not None and self.first.filled

    def nbytes(self) -> int:
        return sum(b.nbytes() for b in (self.first, self.last) if b is not None)

    def check_usable(self, who: str, model=None, latent_shape=None, blocks=None) -> None:
        """Raise a CrossFrameError naming `who` and the fix unless this state can anchor `who`'s run."""
        if not self.filled:
            if self.empty_hint:
                raise CrossFrameError(f"{who}: the attention state from {self.producer} is empty. "
                                      f"{self.empty_hint}")
            raise CrossFrameError(
                f"{who}: the attention state from {self.producer} is empty. Sample the reference with the "
                f"MODEL output of {self.producer} first, and connect that sampler's LATENT output to this "
                "node so it runs before. If the reference sampler's result came from ComfyUI's cache "
                "while the state was rebuilt, change its seed (or any input) to re-run it.")
        ref = self.first.model_ref
        if ref is not None and model is not None:
            recorded = ref()
            if recorded is None:
                raise CrossFrameError(
                    f"{who}: the model that filled the attention state from {self.producer} has been "
                    "unloaded since. Re-run the reference sampler with the current model.")
            if recorded is not model:
                raise CrossFrameError(
                    f"{who}: the attention state from {self.producer} was filled by a different model: "
                    "another checkpoint, or the same one loaded again since. Use the same checkpoint for the "
                    "reference and the frames, and re-run the reference sampler (change its seed or any "
                    "input) if the checkpoint was reloaded.")
        if latent_shape is not None and self.first.latent_shape is not None \
                and tuple(latent_shape) != tuple(self.first.latent_shape):
            c, h, w = self.first.latent_shape
            c2, h2, w2 = latent_shape
            raise CrossFrameError(
                f"{who}: the reference was sampled at {w * 8}x{h * 8} (latent {c}x{h}x{w}) but the frames are "
                f"{w2 * 8}x{h2 * 8} (latent {c2}x{h2}x{w2}). Resize the frames or the reference so both "
                "have the same width and height.")
        if blocks is not None and not set(blocks) <= self.blocks:
            raise CrossFrameError(
                f"{who}: the state from {self.producer} recorded blocks "
                f"{'+'.join(sorted(self.blocks))}, but {'+'.join(sorted(blocks))} were asked for. Choose "
                "the same blocks on both nodes.")


def model_reference(model):
    """A weak reference, so a state never keeps an unloaded checkpoint alive."""
    return weakref.ref(model) if model is not None else None

"""The state object that travels along node links: the recorded anchors of a clip or reference."""
from __future__ import annotations

import weakref

import torch

from .bank import AttentionBank
from .errors import CrossFrameError
from .fingerprint import LatentFingerprint


class CrossFrameState:
    """Recorded attention of a reference (or of a clip so far) that later sampling runs attend to.

    first: the anchor frame's bank (the reference, or the clip's frame 0).
    last: the clip's last frame, when a clip was sampled with its state kept; the next run continues from it.
    blocks: the U-Net block groups recorded.
    recordings: the latest recorded references (newest last), each knowing the latent its run produced, so
        a reader given a reference LATENT finds the recording that belongs to it (see fingerprint.py).

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
        self.recordings: list[AttentionBank] = []
        self.keep_recordings = 1

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def publish(self, bank: AttentionBank, produced: torch.Tensor | None) -> None:
        """A completed reference run: its bank becomes the anchor; older ones beyond keep_recordings go."""
        bank.produced = LatentFingerprint(produced) if produced is not None else None
        self.recordings = (self.recordings + [bank])[-max(1, self.keep_recordings):]
        self.first, self.last = bank, None
        self.runs += 1

    def for_reference(self, reference_samples: torch.Tensor | None, who: str) -> "CrossFrameState":
        """This state, or a view of it anchored on the kept recording that produced `reference_samples`.

        Raises, naming the fix, when the reference LATENT given to `who` was produced by none of the kept
        recordings' runs: ComfyUI served it from its cache after a later run replaced the recording, or the
        link comes from another LATENT. Anchoring on a recording of another run would be a silent error."""
        if reference_samples is None or not self.recordings:
            return self
        newest = self.recordings[-1].latent_shape
        if newest is not None and tuple(reference_samples.shape[1:]) != tuple(newest):
            return self  # another resolution: check_usable says so, which is the more useful message
        for bank in reversed(self.recordings):
            if bank.produced is None or bank.produced.matches(reference_samples):
                if bank is self.first:
                    return self
                view = CrossFrameState(self.blocks, self.producer, self.empty_hint)
                view.first, view.runs = bank, self.runs
                return view
        kept = len(self.recordings)
        raise CrossFrameError(
            f"{who}: reference_latent was not produced by the reference run that {self.producer} holds "
            f"({kept} kept). ComfyUI served the reference sampler's LATENT from its cache after a later run "
            f"replaced the recording (for example: seed 1, then 2, then 1 again), or reference_latent is "
            f"linked to another LATENT. Re-run the reference sampler (change its seed or any input), raise "
            f"keep_recordings on {self.producer} to keep earlier references, and link reference_latent to the "
            f"LATENT output of the sampler that samples {self.producer}'s model.")

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
            ref, frames = tuple(self.first.latent_shape), tuple(latent_shape)
            scale = self.first.pixels_per_latent
            raise CrossFrameError(
                f"{who}: the reference was sampled at {ref[-1] * scale}x{ref[-2] * scale} (latent "
                f"{'x'.join(map(str, ref))}) but the frames are {frames[-1] * scale}x{frames[-2] * scale} "
                f"(latent {'x'.join(map(str, frames))}). Resize the frames or the reference so both have the "
                "same width and height.")
        if blocks is not None and not set(blocks) <= self.blocks:
            raise CrossFrameError(
                f"{who}: the state from {self.producer} recorded blocks "
                f"{'+'.join(sorted(self.blocks))}, but {'+'.join(sorted(blocks))} were asked for. Choose "
                "the same blocks on both nodes.")


def model_reference(model):
    """A weak reference, so a state never keeps an unloaded checkpoint alive."""
    return weakref.ref(model) if model is not None else None

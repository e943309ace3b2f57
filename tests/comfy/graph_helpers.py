"""Small helpers that call node classes the way ComfyUI's executor would (positional widget values)."""
from __future__ import annotations

import sys

import torch

DEFAULTS = dict(seed=1, steps=4, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0,
                frames_per_batch=0, anchors="first+previous", include_self=False, blocks="output",
                start_percent=0.0, end_percent=1.0, bank_device="auto", bank_dtype="auto",
                output_state=False, anchor_every=0)


def video_sampler(comfy, model, conds, latent, state=None, reference_latent=None, **kw):
    o = {**DEFAULTS, **kw}
    pos, neg = o.pop("positive", conds[0]), o.pop("negative", conds[1])
    out = comfy.Sampler.execute(model, pos, neg, latent, o["seed"], o["steps"], o["cfg"], o["sampler_name"],
                                o["scheduler"], o["denoise"], o["frames_per_batch"], o["anchors"],
                                o["include_self"], o["blocks"], o["start_percent"], o["end_percent"],
                                o["bank_device"], o["bank_dtype"], o["output_state"],
                                anchor_every=o["anchor_every"], state=state,
                                reference_latent=reference_latent)
    return out.args[0], out.args[1]


def ksampler(comfy, model, conds, latent, **kw):
    o = {**DEFAULTS, **kw}
    return comfy.nodes.KSampler().sample(model, o["seed"], o["steps"], o["cfg"], o["sampler_name"],
                                         o["scheduler"], conds[0], conds[1], latent, o["denoise"])[0]


def latent_from_batch(comfy, latent, start, length):
    return comfy.nodes.LatentFromBatch().frombatch(latent, start, length)[0]


def store(comfy, model, blocks="output", bank_device="auto", bank_dtype="auto", keep_recordings=1):
    out = comfy.Store.execute(model, blocks, bank_device, bank_dtype, keep_recordings)
    return out.args[0], out.args[1]


def patch(comfy, model, state, reference_latent, anchors="first+previous", include_self=False,
          start_percent=0.0, end_percent=1.0):
    return comfy.Patch.execute(model, state, reference_latent, anchors, include_self, start_percent,
                               end_percent).args[0]


def run_node(cls, **inputs) -> tuple:
    """Call a node class as ComfyUI's executor would, V1 (FUNCTION) or V3 (execute): its outputs as a tuple."""
    out = cls.execute(**inputs) if hasattr(cls, "define_schema") else getattr(cls(), cls.FUNCTION)(**inputs)
    return tuple(getattr(out, "args", out))   # a V3 NodeOutput, or a plain tuple (some V3 nodes return one)


def rel_diff(a, b) -> float:
    """max |a - b| relative to the output scale (max |b|)."""
    a, b = a["samples"] if isinstance(a, dict) else a, b["samples"] if isinstance(b, dict) else b
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def with_hints(conds, control):
    return [[t, {**extra, "control": control}] for t, extra in conds]


def registry(comfy):
    """The pack's family registry (nodes/families/) as ComfyUI loaded it."""
    return sys.modules[comfy.Sampler.__module__.rsplit(".", 1)[0] + ".families"]

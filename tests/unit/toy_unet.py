"""A toy denoiser with self-attention layers, enough to exercise cross-frame attention end to end in a few
milliseconds: each step runs every layer on [groups * frames] images with the cond/uncond layout given."""
from __future__ import annotations

import torch

TOKENS, CHANNELS, LAYERS = 12, 8, 3
SIGMAS = [10.0, 5.0, 2.0, 0.7]


def group_of(layout):
    """Conditioning id -> (flag, index among that flag's conds), as the ComfyUI adapter builds from uuids."""
    seen, out = {}, {}
    for i, flag in enumerate(layout):
        out[i] = (flag, seen.get(flag, 0))
        seen[flag] = seen.get(flag, 0) + 1
    return out


def make_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = CHANNELS ** -0.5
    return [{k: torch.randn(CHANNELS, CHANNELS, generator=g) * scale for k in "qkvo"} for _ in range(LAYERS)]


def attention(h, kv, w):
    q, k, v = h @ w["q"], kv @ w["k"], kv @ w["v"]
    return torch.nn.functional.scaled_dot_product_attention(q, k, v) @ w["o"]


def evaluate(x, weights, cond_or_uncond, kv_source, sigma, split_calls=False):
    """One guided model evaluation. Groups are conditionings: group k of the layout gets its own offset
    (like its own prompt) and id k. With split_calls, each group is evaluated in its own call (ComfyUI
    does that when memory is short, or for area conds of different sizes)."""
    ids = list(range(len(cond_or_uncond)))
    calls = [[i] for i in ids] if split_calls else [ids]
    outs = {}
    for call in calls:
        layout = [cond_or_uncond[i] for i in call]
        h = torch.cat([x + 0.3 * (1 + i) * (-1) ** cond_or_uncond[i] for i in call])
        sig = torch.tensor([sigma] * h.shape[0])
        for layer, w in enumerate(weights):
            kv = kv_source(("output", layer, 0), h, layout, sig, call)
            h = h + attention(h, h if kv is None else kv, w)
        for j, i in enumerate(call):
            outs[i] = h[j * x.shape[0]:(j + 1) * x.shape[0]]
    cond = sum(outs[i] for i in ids if cond_or_uncond[i] == 0)
    uncond = [outs[i] for i in ids if cond_or_uncond[i] == 1]
    return cond if not uncond else uncond[0] + 2.0 * (cond - uncond[0])


def denoise(x, weights, cond_or_uncond, kv_source, sigmas=SIGMAS, split_calls=False, heun=False,
            evaluator=None):
    """x: [frames, T, C]. kv_source(layer, h, layout, sigma, ids) -> K/V input or None.
    heun: a second evaluation per step at the next sigma (so that sigma is evaluated twice, like heun).
    evaluator: replaces `evaluate` (same arguments), e.g. to split each evaluation into windows."""
    evaluate_ = evaluator or evaluate
    for i, sigma in enumerate(sigmas):
        d = torch.tanh(evaluate_(x, weights, cond_or_uncond, kv_source, sigma, split_calls))
        if heun and i + 1 < len(sigmas):
            x_pred = x - 0.1 * sigma * d
            d2 = torch.tanh(evaluate_(x_pred, weights, cond_or_uncond, kv_source, sigmas[i + 1], split_calls))
            d = 0.5 * (d + d2)
        x = x - 0.1 * sigma * d
    return x


def _keyed_source(store, read, skip):
    """kv_source for one frame: keeps its inputs per (layer, sigma, conditioning, n-th evaluation there)
    and attends to [read_first; read_prev] under the same key."""
    seen = {}

    def kv_source(layer, h, layout, sig, ids):
        rows = []
        for j, cid in enumerate(ids):
            base = (layer, float(sig[0]), cid)
            n = seen.get(base, 0)
            seen[base] = n + 1
            store[base + (n,)] = h[j:j + 1]
            if not skip:
                first, prev = read
                rows.append(torch.cat([first[base + (n,)], prev[base + (n,)]], dim=1))
        return None if skip else torch.cat(rows)
    return kv_source


def frame_by_frame(x, weights, cond_or_uncond, reference=None, anchor_every=0, **kw):
    """The method as first written, one frame at a time: frame 0 (or a reference) records its attention
    inputs per (layer, step, conditioning, evaluation); every later frame attends to [first; previous]
    under the same key. With anchor_every = N, frame k*N (k >= 1) is a keyframe: it attends to
    [itself; previous] and the frames after it to [it; previous]."""
    first, prev = ({}, {}) if reference is None else (reference, reference)
    outs = []
    for i in range(x.shape[0]):
        current = {}
        skip = i == 0 and reference is None
        keyframe = anchor_every and i > 0 and i % anchor_every == 0
        read = (current, prev) if keyframe else (first, prev)   # a keyframe's own inputs are stored first
        outs.append(denoise(x[i:i + 1], weights, cond_or_uncond, _keyed_source(current, read, skip), **kw))
        if (i == 0 and reference is None) or keyframe:
            first = current
        prev = current
    return torch.cat(outs)


def windowed(run, size):
    """A kv_source factory splitting every model evaluation into windows of `size` frames, in clip order,
    as ComfyUI's context-window handler does: each window runs every layer before the next window starts."""
    def denoise_windowed(x, weights, cond_or_uncond, **kw):
        frames = x.shape[0]
        bounds = [(s, min(s + size, frames)) for s in range(0, frames, size)]

        def one_evaluation(xe, w, layout, kv_source, sigma, split_calls=False):
            run.begin_evaluation()
            try:
                parts = []
                for s, e in bounds:
                    window = tuple(range(s, e))
                    source = lambda layer, h, lay, sig, ids, window=window: run.kv(layer, h, lay, sig, ids, window)
                    parts.append(evaluate(xe[s:e], w, layout, source, sigma, split_calls))
                return torch.cat(parts)
            finally:
                run.end_evaluation()
        return denoise(x, weights, cond_or_uncond, None, evaluator=one_evaluation, **kw)
    return denoise_windowed


def record_reference(x0, weights, cond_or_uncond, **kw):
    """Plain denoise of one image, keeping its attention inputs like frame_by_frame does."""
    stored = {}
    denoise(x0, weights, cond_or_uncond, _keyed_source(stored, None, True), **kw)
    return stored

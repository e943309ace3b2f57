"""The host keeper's GPU path (attention/anchor_keeping.py): pinned buffers, copies on a side stream that
overlap the model's stream, uploads prefetched one layer ahead. Needs a CUDA device: CI machines have none,
so it skips there; it runs on the project's GPU machine (CONTRIBUTING.md, Benchmarking)."""
import pytest
import torch
from cross_frame_attention.window_anchors import WindowAnchors, WindowCall

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CPU-only machine)")

HW, C, LAYERS = 1560, 1536, 6     # Wan 2.1 1.3B: tokens of one 480x832 latent frame, width
CHUNKS = ((1, "n"), (0, "p"))


def busy_run(state: WindowAnchors):
    """Windows as a model evaluates them, with slow work queued on the model's stream and freed memory
    reused at once: a copy that is not ordered with the model's stream, or whose memory is handed out again
    too early, reads or writes the wrong numbers."""
    g = torch.Generator(device="cuda").manual_seed(3)
    weight = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    outs = []
    for sigma in (2.0, 1.0):
        for frames in ((0, 1, 2, 3), (2, 3, 4, 5), (4, 5, 6, 7)):
            call = WindowCall(frames=frames, tokens_per_frame=HW, sigma=sigma, chunks=CHUNKS)
            for layer in range(LAYERS):
                k = torch.randn(len(CHUNKS), len(frames) * HW, C, device="cuda", dtype=torch.bfloat16,
                                generator=g)
                v = -k
                for _ in range(4):          # keeps the model's stream busy while copies are queued
                    weight = torch.tanh(weight @ weight * 1e-2)
                out_k, out_v = state.kv(layer, call, k, v)
                outs.append((out_k.sum(dim=(0, 2), dtype=torch.float32), out_v[:, -HW:].float().sum()))
                del k, v, out_k, out_v
                scratch = torch.full((len(CHUNKS), 4 * HW, C), 7.0, device="cuda", dtype=torch.bfloat16)
                del scratch                 # freed blocks reused right away by the next layer's tensors
    torch.cuda.synchronize()
    return outs


def test_host_keeper_on_a_gpu_equals_the_device_keeper_and_holds_little_gpu_memory():
    host, device = WindowAnchors(keep="cpu"), WindowAnchors(keep="gpu")
    got = busy_run(host)
    assert all(t.is_pinned() for pair in host.kept._host.values() for t in pair)
    sizes = host.nbytes()
    torch.cuda.synchronize()
    want = busy_run(device)
    for (gk, gv), (wk, wv) in zip(got, want):
        assert torch.equal(gk, wk) and torch.equal(gv, wv)
    frame = 2 * HW * C * 2                               # one frame's keys and values, bf16
    assert sizes["host"] == LAYERS * len(CHUNKS) * 2 * frame
    assert sizes["device"] <= len(CHUNKS) * 2 * frame   # at most one layer's prefetch on the GPU
    assert host.kept.prefetch_hits > 0 and host.kept.prefetch_misses == 2 * len(CHUNKS)

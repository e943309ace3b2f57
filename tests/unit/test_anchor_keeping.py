"""Where cross-window anchors wait between windows (attention/anchor_keeping.py): the host keeper (pinned
memory, prefetch one layer ahead) gives exactly what the device keeper gives, prefetches what the next layer
reads, and never serves a prefetch that a newer save has made stale. On a CPU machine the host keeper runs its
bookkeeping with plain copies; tests/unit/test_anchor_keeping_cuda.py runs the side-stream copies on a GPU."""
import pytest
import torch
from cross_frame_attention.anchor_keeping import KeptOnDevice, KeptOnHost
from cross_frame_attention.window_anchors import WindowAnchors, WindowCall

HW, C, LAYERS = 3, 8, 4
CHUNKS = ((1, "n"), (0, "p"))


def sample_run(state: WindowAnchors, device="cpu", steps=(3.0, 2.0), windows=((0, 1, 2), (2, 3, 4), (4, 5, 6))):
    """Every window, layer by layer, at each step, as a model evaluation calls them; returns all outputs."""
    g = torch.Generator().manual_seed(7)
    outs = []
    for sigma in steps:
        for frames in windows:
            call = WindowCall(frames=frames, tokens_per_frame=HW, sigma=sigma, chunks=CHUNKS)
            for layer in range(LAYERS):
                k = torch.randn(len(CHUNKS), len(frames) * HW, C, generator=g).to(device)
                v = torch.randn(len(CHUNKS), len(frames) * HW, C, generator=g).to(device)
                outs.append(tuple(t.cpu() for t in state.kv(layer, call, k, v)))
                del k, v
    return outs


def test_host_keeper_gives_what_the_device_keeper_gives_and_prefetches_the_next_layer():
    host, device = WindowAnchors(keep="cpu"), WindowAnchors(keep="gpu")
    assert isinstance(host.kept, KeptOnHost) and isinstance(device.kept, KeptOnDevice)
    got, want = sample_run(host), sample_run(device)
    assert len(got) == len(want)
    for (gk, gv), (wk, wv) in zip(got, want):
        assert torch.equal(gk, wk) and torch.equal(gv, wv)
    assert any(k.shape[1] > 3 * HW for k, _ in got)        # anchors were appended at all
    # 2 steps x 2 later windows x 4 layers x 2 conditionings x (first, previous) loads. Only the very first
    # later window's layer 0 has no prefetch (the layer order is learnt during window 0): 2 conditionings x 2
    # frames; from then on, the last layer of a window prefetches the next window's layer 0.
    loads = 2 * 2 * LAYERS * 2 * 2
    assert host.kept.prefetch_hits + host.kept.prefetch_misses == loads
    assert host.kept.prefetch_misses == 4
    # the GPU side holds at most one layer's prefetched anchors; everything else waits on the host
    sizes = host.nbytes()
    assert sizes["host"] == LAYERS * len(CHUNKS) * 2 * (2 * HW * C * 4)
    assert sizes["device"] <= len(CHUNKS) * 2 * (2 * HW * C * 4)


def test_a_prefetch_made_stale_by_a_newer_save_is_not_served():
    kept = KeptOnHost()
    old, new = torch.ones(2, 3), torch.full((2, 3), 2.0)
    kept.save("x", old, -old)
    kept.prefetch("x", torch.device("cpu"))
    kept.save("x", new, -new)                       # the buffer now holds the newer frame
    k, v = kept.load("x", old)
    assert torch.equal(k, new) and torch.equal(v, -new)
    assert (kept.prefetch_hits, kept.prefetch_misses) == (0, 1)
    kept.prefetch("x", torch.device("cpu"))
    new.add_(5.0)                                   # the saved copy does not follow its source
    k, _ = kept.load("x", old)
    assert torch.equal(k, torch.full((2, 3), 2.0)) and kept.prefetch_hits == 1
    kept.clear()
    kept.prefetch("x", torch.device("cpu"))         # nothing kept: nothing to prefetch
    assert kept.nbytes() == {"device": 0, "host": 0}


@pytest.mark.parametrize("anchors", ["first", "previous"])
def test_one_anchor_kind_keeps_and_prefetches_only_that_kind(anchors):
    host, device = WindowAnchors(anchors, keep="cpu"), WindowAnchors(anchors, keep="gpu")
    for (gk, gv), (wk, wv) in zip(sample_run(host), sample_run(device)):
        assert torch.equal(gk, wk) and torch.equal(gv, wv)
    assert host.kept.prefetch_misses == 2 and host.kept.prefetch_hits == 2 * 2 * LAYERS * 2 - 2


def test_two_threads_one_conditioning_each_equal_one_batched_call():
    """MultiGPU CFG split runs cond and uncond in two threads at once: each thread learns its own layer order
    and prefetches its own conditioning's anchors, and the result is the batched one."""
    import threading

    batched = sample_run(WindowAnchors(keep="cpu"))
    state = WindowAnchors(keep="cpu")
    g = torch.Generator().manual_seed(7)
    inputs = []   # the same random keys as sample_run draws, in its order
    for sigma in (3.0, 2.0):
        for frames in ((0, 1, 2), (2, 3, 4), (4, 5, 6)):
            for layer in range(LAYERS):
                k = torch.randn(len(CHUNKS), len(frames) * HW, C, generator=g)
                v = torch.randn(len(CHUNKS), len(frames) * HW, C, generator=g)
                inputs.append((sigma, frames, layer, k, v))
    outs = {c: [] for c in range(len(CHUNKS))}
    barrier = threading.Barrier(len(CHUNKS))

    def one_conditioning(c):
        call = None
        for sigma, frames, layer, k, v in inputs:
            if layer == 0:
                call = WindowCall(frames=frames, tokens_per_frame=HW, sigma=sigma, chunks=(CHUNKS[c],))
                barrier.wait()   # both threads in the same window of the same step, layer for layer
            outs[c].append(state.kv(layer, call, k[c:c + 1], v[c:c + 1]))

    threads = [threading.Thread(target=one_conditioning, args=(c,)) for c in range(len(CHUNKS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (bk, bv) in enumerate(batched):
        assert torch.equal(bk, torch.cat([outs[c][i][0] for c in range(len(CHUNKS))]))
        assert torch.equal(bv, torch.cat([outs[c][i][1] for c in range(len(CHUNKS))]))
    assert state.kept.prefetch_misses == 2 * 2   # per thread: the first later window's first layer only

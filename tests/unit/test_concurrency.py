"""One FrameRun driven from two threads at once, as MultiGPU CFG split does (cond on one GPU, uncond on the
other, both through the same patch object), with the threads forced to alternate at every line of the core:
every key/value source and every recording must equal what the same calls give one after another."""
from pathlib import Path

import pytest
import torch

import cross_frame_attention
from cross_frame_attention import AttentionBank, CrossFrameOptions, FrameRun, RunPlan

from lockstep import LockStep

CORE_FILES = [str(p) for p in Path(cross_frame_attention.__file__).parent.glob("*.py")]
LAYERS = ["in.0", "out.0", "out.1"]
SIGMAS = [14.6, 7.1, 2.5, 0.03]
FRAMES, TOKENS, CHANNELS = 3, 4, 2
# ComfyUI's uuids of the two conditionings, and their (flag, index) group keys
GROUP_OF = {"uuid-positive": (0, 0), "uuid-negative": (1, 0)}


def frames_for(flag, sigma, layer, frames=FRAMES):
    """Deterministic distinct attention inputs per conditioning, step and layer."""
    g = torch.Generator().manual_seed(hash((flag, sigma, layer)) % 2**31)
    return torch.randn(frames, TOKENS, CHANNELS, generator=g)


def recorded_reference():
    """A reference bank with cond and uncond recorded at every step (as Store Reference Attention does)."""
    bank = AttentionBank("reference")
    store = FrameRun(RunPlan(frames=1, options=CrossFrameOptions(), store=bank), GROUP_OF)
    for sigma in SIGMAS:
        for layer in LAYERS:
            x = torch.cat([frames_for(1, sigma, layer, 1) * 3, frames_for(0, sigma, layer, 1) * 3])
            store.kv(layer, x, [1, 0], torch.tensor([sigma, sigma]), ["uuid-negative", "uuid-positive"])
    return bank


def plan(kind, reference):
    opts = CrossFrameOptions()
    if kind == "whole clip":
        return RunPlan(frames=FRAMES, options=opts)
    if kind == "chunk with banks":   # a later chunk: reads anchors, records its boundary frames
        return RunPlan(frames=FRAMES, options=opts, first=reference, prev=reference,
                       record_first=AttentionBank("first"), record_last=AttentionBank("last"))
    if kind == "store":
        return RunPlan(frames=FRAMES, options=opts, store=AttentionBank("store"))
    if kind == "part of the schedule":
        return RunPlan(frames=FRAMES, options=opts, first=reference, active_sigmas=(10.0, 1.0))
    raise AssertionError(kind)


def one_conditioning(run, flag, uuid):
    """The calls one GPU thread makes: every step, every layer, for its own conditioning. Like ComfyUI, each
    model call passes one sigma tensor and one uuids list object to all of its layers."""
    out = []
    for sigma in SIGMAS:
        sigma_t, ids = torch.tensor([sigma] * FRAMES), [uuid]
        for layer in LAYERS:
            kv = run.kv(layer, frames_for(flag, sigma, layer), [flag], sigma_t, ids)
            out.append(None if kv is None else kv.clone())
    return out


def by_step(bank):
    """A bank's entries keyed by sigma instead of slot number (slots depend on recording order)."""
    if bank is None:
        return None
    slot_sigma = {slot: sigma for sigma, slot in bank.steps._slots.items()}
    return {(layer, group, slot_sigma[slot], occ): t for (layer, group, slot, occ), t in bank._entries.items()}


@pytest.mark.parametrize("kind", ["whole clip", "chunk with banks", "store", "part of the schedule"])
def test_two_threads_forced_to_interleave_give_the_single_thread_result(kind):
    reference = recorded_reference()
    serial_plan = plan(kind, reference)
    serial = FrameRun(serial_plan, GROUP_OF)
    want_cond = one_conditioning(serial, 0, "uuid-positive")
    want_uncond = one_conditioning(serial, 1, "uuid-negative")

    parallel_plan = plan(kind, reference)
    parallel = FrameRun(parallel_plan, GROUP_OF)
    lockstep = LockStep(CORE_FILES)
    got_cond, got_uncond = lockstep.run(lambda: one_conditioning(parallel, 0, "uuid-positive"),
                                        lambda: one_conditioning(parallel, 1, "uuid-negative"))
    assert lockstep.switches > 100, "the threads did not interleave; the test proves nothing"
    print(f"{kind}: {lockstep.switches} forced switches, {lockstep.timeouts} waits timed out")

    for want, got in ((want_cond, got_cond), (want_uncond, got_uncond)):
        assert len(want) == len(got)
        for w, g in zip(want, got):
            assert (w is None) == (g is None)
            if w is not None:
                assert torch.equal(w, g)
    for name in ("record_first", "record_last", "store"):
        bank = getattr(parallel_plan, name)
        if bank is not None:
            assert len(bank.steps) == len(SIGMAS), f"{name}: one slot per step, not one per thread"
        w, g = by_step(getattr(serial_plan, name)), by_step(bank)
        assert (w is None) == (g is None)
        if w is not None:
            assert w.keys() == g.keys()
            for key in w:
                assert torch.equal(w[key], g[key]), key


def test_a_bank_recorded_from_two_threads_keeps_one_slot_per_step():
    bank = AttentionBank("shared")
    lockstep = LockStep(CORE_FILES)

    def record(flag):
        def go():
            for sigma in SIGMAS:
                for layer in LAYERS:
                    bank.record(layer, (flag, 0), sigma, frames_for(flag, sigma, layer, 1)[0])
        return go
    lockstep.run(record(0), record(1))
    assert len(bank.steps) == len(SIGMAS)
    assert len(bank) == 2 * len(SIGMAS) * len(LAYERS)
    for sigma in SIGMAS:
        slot = bank.slot(sigma, "test")
        for flag in (0, 1):
            got = bank.fetch("out.0", [(flag, 0)], [0], slot, torch.empty(1), "test")[0]
            assert torch.equal(got, frames_for(flag, sigma, "out.0", 1)[0])

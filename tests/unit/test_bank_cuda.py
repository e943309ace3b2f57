"""The CPU bank's GPU path (pinned memory, copies without a sync). Needs a CUDA device: CI machines have
none, so it skips there; it runs on the project's GPU machine (CONTRIBUTING.md, Benchmarking)."""
import pytest
import torch

from cross_frame_attention import AttentionBank

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CPU-only machine)")


def test_cpu_bank_round_trip_from_and_to_the_gpu():
    bank = AttentionBank("ref", device=torch.device("cpu"), dtype=torch.bfloat16)
    rows = [torch.randn(64, 32, device="cuda", dtype=torch.float16) for _ in range(3)]
    originals = [r.clone() for r in rows]
    for step, row in enumerate(rows):
        bank.record("L", (0, 0), float(10 - step), row)
        bank.record("L", (1, 0), float(10 - step), row * 2)
        row.add_(100.0)                     # the live batch changes right after; the bank must not
    stored = next(iter(bank._entries.values()))
    assert stored.device.type == "cpu" and stored.is_pinned() and stored.dtype == torch.bfloat16
    like = torch.empty(1, device="cuda", dtype=torch.float16)
    got = bank.fetch("L", [(0, 0), (1, 0)], [0, 0], bank.slot(9.0, "test"), like, "test")
    torch.cuda.synchronize()
    want = originals[1].to(torch.bfloat16).to(torch.float16)
    want2 = (originals[1] * 2).to(torch.bfloat16).to(torch.float16)
    assert got.device.type == "cuda" and got.shape == (2, 64, 32)
    assert torch.equal(got[0], want) and torch.equal(got[1], want2)

import logging

import pytest

from cross_frame_attention import CrossFrameError, SigmaIndex


def filled(sigmas):
    index = SigmaIndex()
    for s in sigmas:
        index.slot_for_record(s)
    return index


def test_exact_match_within_tolerance():
    index = filled([14.6, 7.0, 3.1, 0.9])
    assert index.slot_for_lookup(7.0, "ref") == 1
    assert index.slot_for_lookup(7.0 * (1 + 5e-5), "ref") == 1
    assert index.fallbacks == 0


def test_repeated_sigma_reuses_its_slot():
    """heun evaluates sigma[i+1] twice: one slot, so the later record overwrites the earlier."""
    index = filled([14.6, 7.0, 7.0, 3.1])
    assert len(index) == 3
    assert index.slot_for_record(7.0) == 1


def test_nearest_fallback_warns_once(caplog):
    index = filled([14.6, 7.0, 3.1, 0.9])
    with caplog.at_level(logging.WARNING, logger="CrossFrameAttention"):
        assert index.slot_for_lookup(5.5, "ref") == 1     # nearer to 7.0 than to 3.1
        assert index.slot_for_lookup(2.5, "ref") == 2
    assert index.fallbacks == 2
    assert sum("nearest recorded sigma" in r.message for r in caplog.records) == 1


def test_outside_recorded_range_is_an_error():
    index = filled([3.1, 1.5, 0.9])  # a reference sampled with low denoise
    with pytest.raises(CrossFrameError, match="no step usable.*same steps, scheduler and denoise"):
        index.slot_for_lookup(14.6, "the reference")
    with pytest.raises(CrossFrameError, match="never filled"):
        SigmaIndex().slot_for_lookup(1.0, "the reference")

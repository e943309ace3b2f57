"""The per-frame anchor policy (attention/anchors.py): which frame is frame i's first anchor and previous frame,
and what a window of frames reads and leaves to later windows, agreeing with the per-frame definition."""
import pytest

from cross_frame_attention import CrossFrameOptions, window_bounds
from cross_frame_attention.anchors import BEFORE, REFERENCE, AnchorPolicy, keyframe_of


def policy(anchors="first+previous", every=0, frames=7, reference=False, before=False):
    return AnchorPolicy(CrossFrameOptions(anchors=anchors, anchor_every=every), frames, reference, before)


def test_first_anchor_per_frame():
    assert [policy().first_of(i) for i in range(5)] == [0] * 5
    assert [policy(reference=True).first_of(i) for i in range(3)] == [REFERENCE] * 3
    assert [policy(every=3).first_of(i) for i in range(8)] == [0, 0, 0, 3, 3, 3, 6, 6]
    # frames before the first keyframe after 0 keep the reference; later keyframes are clip frames
    assert [policy(every=2, reference=True).first_of(i) for i in range(5)] == [REFERENCE] * 2 + [2, 2, 4]
    assert [keyframe_of(i, 0) for i in (0, 5)] == [0, 0]


def test_previous_frame_per_frame():
    assert [policy().previous_of(i) for i in range(4)] == [0, 0, 1, 2]     # frame 0: itself ([f0; f0])
    assert policy(reference=True).previous_of(0) == REFERENCE
    assert policy(reference=True, before=True).previous_of(0) == BEFORE   # a continuation's last frame
    assert policy(every=2).previous_of(4) == 3                             # a keyframe continues from i-1


def test_continuation_anchor_is_the_latest_keyframe():
    assert policy(frames=7).continuation_anchor() == 0
    assert policy(every=3, frames=7).continuation_anchor() == 6
    assert policy(every=3, frames=6).continuation_anchor() == 3


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("anchors", ["first+previous", "first", "previous"])
@pytest.mark.parametrize("every,reference,before", [(0, False, False), (2, False, False), (3, True, False),
                                                    (0, True, True), (4, True, True)])
def test_windows_agree_with_the_per_frame_policy(size, anchors, every, reference, before):
    """Every window's spans give each of its frames the first anchor first_of says, its first frame the
    previous frame previous_of says, and the carry keeps exactly the earlier-window frames later windows read."""
    p = policy(anchors, every, 7, reference, before)
    uses_first, uses_previous = "first" in anchors, "previous" in anchors
    slots = {"anchor": None, "key": None, "recent": None}   # what a WindowCarry holds: one frame each
    for start, stop in window_bounds(7, size):
        w = p.window(start, stop)
        assert p.window(start, stop) is w                                  # computed once per window
        if uses_first:
            spans = [(lo, hi) for lo, hi, _ in w.first]
            assert spans[0][0] == 0 and spans[-1][1] == stop - start
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))    # consecutive, covering the window
            for lo, hi, source in w.first:
                assert all(p.first_of(start + f) == source for f in range(lo, hi))
        else:
            assert w.first == ()
        assert w.prev0 == (p.previous_of(start) if uses_previous else None)
        # every clip frame a window reads from outside itself and the banks was carried by an earlier window
        reads = {s for _, _, s in w.first} | ({w.prev0} if w.prev0 is not None else set())
        outside = {s for s in reads if isinstance(s, int) and not start <= s < stop}
        assert outside <= set(slots.values())
        for slot, frame in (("anchor", w.carry_anchor), ("key", w.carry_key),
                            ("recent", stop - 1 if w.carry_last else None)):
            if frame is not None:
                assert start <= frame < stop
                slots[slot] = frame
        assert w.carry_last == (uses_previous and stop < 7)

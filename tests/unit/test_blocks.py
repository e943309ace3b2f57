"""Block choices in the core: any block kind with an optional index range parses (the front ends know their
models' kinds, nodes/families/ and the diffusers processor); what each part selects; malformed choices."""
import pytest

from cross_frame_attention import CrossFrameError, CrossFrameOptions
from cross_frame_attention.options import block_names, block_selector, parse_blocks


def test_auto_is_left_to_the_front_end():
    with pytest.raises(CrossFrameError, match="'auto' depends on the model"):
        parse_blocks("auto", "X")


def test_kinds_and_ranges_parse():
    assert parse_blocks("input+output", "X") == {"input", "output"}
    assert parse_blocks("double[30:]+single", "X") == {"double[30:]", "single"}
    assert parse_blocks("layers[:15]", "X") == {"layers[:15]"}
    assert block_names({"double[30:]", "single"}) == {"double", "single"}


def test_ranges_select_like_slices():
    sel = block_selector(parse_blocks("double[2:4]+single", "X"))
    assert [i for i in range(6) if sel("double", i)] == [2, 3]
    assert all(sel("single", i) for i in range(40))
    tail = block_selector(frozenset({"double[30:]"}))
    assert not tail("double", 29) and tail("double", 30) and tail("double", 59) and not tail("single", 40)
    head = block_selector(frozenset({"double[:2]"}))
    assert [i for i in range(4) if head("double", i)] == [0, 1]
    assert block_selector(frozenset({"output"}))("output", 7)
    assert not block_selector(frozenset({"output"}))("input", 7)


@pytest.mark.parametrize("bad", ["double[a:]", "", "out put", "double[1]", "+", "9lives"])
def test_malformed_blocks_are_refused_naming_the_node(bad):
    with pytest.raises(CrossFrameError, match="^Node: blocks="):
        CrossFrameOptions(blocks=bad, who="Node")
    with pytest.raises(CrossFrameError, match="^Node: blocks="):
        CrossFrameOptions(blocks=frozenset(p for p in bad.split("+") if p), who="Node")

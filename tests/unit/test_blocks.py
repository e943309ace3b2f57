"""Block choices: U-Net groups, DiT block types with index ranges, and what each selects."""
import pytest

from cross_frame_attention import CrossFrameError, CrossFrameOptions
from cross_frame_attention.options import BLOCK_CHOICES, block_selector, is_dit_blocks, parse_blocks


def test_every_combo_choice_but_auto_parses():
    for choice in BLOCK_CHOICES:
        if choice == "auto":
            with pytest.raises(CrossFrameError, match="'auto' depends on the model"):
                parse_blocks(choice, "X")
        else:
            assert parse_blocks(choice, "X")


def test_dit_ranges_select_like_slices():
    sel = block_selector(parse_blocks("double[2:4]+single", "X"))
    assert [i for i in range(6) if sel("double", i)] == [2, 3]
    assert all(sel("single", i) for i in range(40))
    tail = block_selector(frozenset({"double[30:]"}))
    assert not tail("double", 29) and tail("double", 30) and tail("double", 59) and not tail("single", 40)
    head = block_selector(frozenset({"double[:2]"}))
    assert [i for i in range(4) if head("double", i)] == [0, 1]
    assert block_selector(frozenset({"output"}))("output", 7)
    assert is_dit_blocks({"double[30:]"}) and not is_dit_blocks({"output"})


@pytest.mark.parametrize("bad", ["decoder", "output+single", "double[a:]", "triple", ""])
def test_bad_blocks_are_refused_naming_the_node(bad):
    with pytest.raises(CrossFrameError, match="^Node: blocks="):
        CrossFrameOptions(blocks=bad, who="Node")
    with pytest.raises(CrossFrameError, match="^Node: blocks="):
        CrossFrameOptions(blocks=frozenset(bad.split("+")), who="Node")

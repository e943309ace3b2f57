import itertools

import pytest
import torch

from cross_frame_attention import anchor_count, assemble_kv


def reference_kv(x, groups, first, prev0, anchors, include_self):
    """The definition, frame by frame."""
    frames = x.shape[0] // groups
    rows = []
    for g in range(groups):
        for f in range(frames):
            parts = []
            if "first" in anchors:
                parts.append(first[g])
            if "previous" in anchors:
                parts.append(prev0[g] if f == 0 else x[g * frames + f - 1])
            if include_self:
                parts.append(x[g * frames + f])
            rows.append(torch.cat(parts))
    return torch.stack(rows)


@pytest.mark.parametrize("anchors,include_self,groups,frames", list(itertools.product(
    ["first+previous", "first", "previous"], [False, True], [1, 2, 3], [1, 2, 5])))
def test_matches_frame_by_frame_definition(anchors, include_self, groups, frames):
    g = torch.Generator().manual_seed(groups * 10 + frames)
    x = torch.randn(groups * frames, 6, 4, generator=g)
    first = torch.randn(groups, 6, 4, generator=g)
    prev0 = torch.randn(groups, 6, 4, generator=g)
    got = assemble_kv(x, groups, first, prev0, anchors, include_self)
    want = reference_kv(x, groups, first, prev0, anchors, include_self)
    assert got.shape == (groups * frames, anchor_count(anchors, include_self) * 6, 4)
    assert torch.equal(got, want)


@pytest.mark.thread_sensitive
def test_frame_zero_anchoring_itself_is_plain_self_attention():
    """[f0, f0] as keys/values equals attention over f0 alone: duplicated keys don't change a softmax."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 8, generator=g)
    kv = assemble_kv(x, 1, x[:, :], x[:, :], "first+previous", False)
    q = torch.randn(1, 16, 8, generator=g)
    plain = torch.nn.functional.scaled_dot_product_attention(q, x, x)
    doubled = torch.nn.functional.scaled_dot_product_attention(q, kv, kv)
    assert torch.allclose(plain, doubled, atol=1e-6)

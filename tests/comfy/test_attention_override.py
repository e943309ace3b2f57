"""The attention-override ways in on tiny random Z-Image (NextDiT), Krea2, Cosmos Predict2 and Anima models
(nodes/families/way_attention_override.py, and way_pre_projection_override.py, where a pre-projection attn1_patch
tells the override which call is self-attention): the pack's override wraps an override already set (which keeps
being called, with the anchored keys), it stops with an error naming both when another override replaces it,
and padded image tokens keep frame 0 exact. On Cosmos, other attn1 patches keep being called, and keys changed
before ours stop sampling."""
import pytest
import torch

import dit_models
from graph_helpers import ksampler, latent_from_batch, rel_diff, store, video_sampler
from test_dit import DIT, TOL

OVERRIDE = "optimized_attention_override"


FLAGGED = ("cosmos", "anima")   # reached through way_pre_projection_override.py


@pytest.fixture(scope="module", params=["zimage", "krea2", *FLAGGED])
def zimage(request, comfy, needs_hook):
    model = dit_models.build(comfy, request.param)
    conds = dit_models.conditioning(request.param)
    latent = dit_models.clip_latent(request.param, frames=3)
    whole, _ = video_sampler(comfy, model, conds, latent, **DIT)
    return dict(model=model, conds=conds, latent=latent, whole=whole, family=request.param)


def with_override(model, override):
    clone = model.clone()
    clone.model_options.setdefault("transformer_options", {})[OVERRIDE] = override
    return clone


def main_self_attention(family, args, options) -> bool:
    """Whether an attention call is the self-attention of a main block: Cosmos names no block type, and its
    cross-attention keys are the 8 text tokens, shorter than the 64 image queries."""
    if family in FLAGGED:
        return "block_index" in options and args[1].shape[2] >= args[0].shape[2]
    return "block_type" in options


def test_an_earlier_override_is_wrapped_and_still_called(comfy, zimage):
    """Another node's override set before ours (upstream): ours calls it with the anchored keys, so it sees
    main layers with keys twice as long as the queries, and the clip is unchanged by its pass-through."""
    seen = []

    def other_override(func, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        if main_self_attention(zimage["family"], args, options):
            seen.append(args[1].shape[2] // args[0].shape[2])
        return func(*args, **kwargs)

    out, _ = video_sampler(comfy, with_override(zimage["model"], other_override), zimage["conds"],
                           zimage["latent"], **DIT)
    assert rel_diff(out, zimage["whole"]) <= TOL
    assert seen and set(seen) == {1, 2}   # blocks not chosen: own keys; chosen blocks: [txt; first; txt; prev]


def test_an_override_set_after_ours_stops_sampling_naming_both(comfy, zimage):
    """A node downstream replacing the override slot (not wrapping ours) would silently sample without
    cross-frame attention: the first model call stops instead, naming the other override and the order."""
    def replacing_override(func, *args, **kwargs):
        return func(*args, **kwargs)

    store_model, _ = store(comfy, zimage["model"], blocks="auto")
    replaced = with_override(store_model, replacing_override)
    with pytest.raises(ValueError, match="Store Reference Attention: another attention override \\(.*"
                                         "replacing_override\\) replaced cross-frame attention's on this "
                                         "(Z-Image|Krea2|Cosmos Predict2) model.*Put Store Reference Attention after \\(downstream of\\) the node"):
        ksampler(comfy, replaced, zimage["conds"], latent_from_batch(comfy, zimage["latent"], 0, 1),
                 **{**DIT, "steps": 1})


def test_padded_image_tokens_keep_frame_zero_exact(comfy, zimage):
    """A latent whose patch count is not a multiple of the model's 32 gets pad tokens at the end of the image
    rows; the image-token count includes them, so frame 0 and identical frames stay plain sampling."""
    if zimage["family"] != "zimage":
        pytest.skip("only Z-Image pads its image tokens")
    latent = dit_models.clip_latent("zimage_padded", frames=2)
    out, _ = video_sampler(comfy, zimage["model"], zimage["conds"], latent, **DIT)
    frame0 = ksampler(comfy, zimage["model"], zimage["conds"], latent_from_batch(comfy, latent, 0, 1), **DIT)
    assert rel_diff(out["samples"][:1], frame0["samples"]) <= TOL
    plain = ksampler(comfy, zimage["model"], zimage["conds"], latent, **DIT)
    assert rel_diff(out["samples"][1:], plain["samples"][1:]) > 1e-2
    assert torch.isfinite(out["samples"]).all()


def test_cosmos_other_attn1_patches_are_still_called(comfy, zimage):
    """Cosmos: ours is also an attn1_patch entry (it only marks the next attention call as self-attention).
    Another pack's entry, before and after ours, is still called once per block with the pre-projection
    inputs ([B, tokens, width]), and the clip is unchanged by its pass-through."""
    if zimage["family"] not in FLAGGED:
        pytest.skip("only Cosmos Predict2 / Anima are reached through a pre-projection attn1_patch")
    seen = []

    def other_pack_patch(q, k, v, pe=None, attn_mask=None, extra_options=None):
        seen.append((extra_options["block_index"], q.ndim, k.shape[1] == q.shape[1]))
        return {}

    upstream = zimage["model"].clone()
    upstream.set_model_attn1_patch(other_pack_patch)
    out, _ = video_sampler(comfy, upstream, zimage["conds"], zimage["latent"], **DIT)
    assert rel_diff(out, zimage["whole"]) <= TOL
    assert seen and set(seen) == {(0, 3, True), (1, 3, True)}
    seen.clear()
    store_model, _ = store(comfy, zimage["model"], blocks="auto")
    store_model.set_model_attn1_patch(other_pack_patch)
    reference = ksampler(comfy, store_model, zimage["conds"], latent_from_batch(comfy, zimage["latent"], 0, 1),
                         **DIT)
    assert rel_diff(reference, zimage["whole"]["samples"][:1]) <= TOL
    assert seen and set(seen) == {(0, 3, True), (1, 3, True)}


def test_cosmos_keys_changed_before_ours_stop_sampling(comfy, zimage):
    """An override set after ours that wraps it but hands it longer keys for self-attention: ours cannot tell
    which rows are the frame's own, so sampling stops with the layout error instead of guessing (at the first
    block, chosen or not: a marked call whose keys are not as long as its queries is not the self-attention the
    marker announced)."""
    if zimage["family"] not in FLAGGED:
        pytest.skip("only Cosmos Predict2 / Anima are reached through a pre-projection attn1_patch")
    store_model, _ = store(comfy, zimage["model"], blocks="auto")
    ours = store_model.model_options["transformer_options"][OVERRIDE]

    def doubling_override(func, *args, **kwargs):
        q, k, v = args[:3]
        if k.shape[2] == q.shape[2]:
            args = (q, torch.cat([k, k], dim=2), torch.cat([v, v], dim=2), *args[3:])
        return ours(func, *args, **kwargs)

    with pytest.raises(ValueError, match="Store Reference Attention: the Cosmos Predict2 attention of block "
                                         "double 0 came in a layout this pack does not know"):
        ksampler(comfy, with_override(store_model, doubling_override), zimage["conds"],
                 latent_from_batch(comfy, zimage["latent"], 0, 1), **{**DIT, "steps": 1})

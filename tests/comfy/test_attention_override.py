"""The attention-override way in (nodes/families/way_attention_override.py) on tiny random Z-Image (NextDiT) and
Krea2 models:
it wraps an override already set (which keeps being called, with the anchored keys), it stops with an error
naming both when another override replaces it, and padded image tokens keep frame 0 exact."""
import pytest
import torch

import dit_models
from graph_helpers import ksampler, latent_from_batch, rel_diff, store, video_sampler
from test_dit import DIT, TOL

OVERRIDE = "optimized_attention_override"


@pytest.fixture(scope="module", params=["zimage", "krea2"])
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


def test_an_earlier_override_is_wrapped_and_still_called(comfy, zimage):
    """Another node's override set before ours (upstream): ours calls it with the anchored keys, so it sees
    main layers with keys twice as long as the queries, and the clip is unchanged by its pass-through."""
    seen = []

    def other_override(func, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        if "block_type" in options:
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
                                         "(Z-Image|Krea2) model.*Put Store Reference Attention after \\(downstream of\\) the node"):
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

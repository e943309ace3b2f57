"""Core ComfyUI model-patch nodes beside ours, case by case (issue 25): a hypernetwork on either side of the
cross-frame node, HyperTile, SAG and EasyCache with windows, TorchCompileModel. Each gives the method's
invariants or stops with a clear error when sampling starts; after an error the same graph without the
conflict samples right. The composition matrix over every core MODEL node is test_composition_matrix.py."""
import pytest
import torch

from core_node_files import register
from graph_helpers import ksampler, latent_from_batch, patch, rel_diff, run_node, store, video_sampler

TOL = 1e-4


@pytest.fixture(scope="module")
def files(comfy, tiny_model, tmp_path_factory):
    return register(tmp_path_factory.mktemp("core_node_files"), tiny_model.model.diffusion_model)


def hypernetwork(model, files):
    from comfy_extras.nodes_hypernetwork import HypernetworkLoader
    return run_node(HypernetworkLoader, model=model, hypernetwork_name=files["hypernetwork_name"],
                    strength=1.0)[0]


def test_hypernetwork_on_either_side_of_the_cross_frame_node(comfy, tiny_model, conds, clip_latent, files):
    """A hypernetwork transforms each token's key and value input apart; before Batch Video Sampler the two
    sources gather the same frames, so both orders give one clip, and frame 0 is the hypernetwork's plain
    sampling."""
    kw = dict(steps=3)
    hyper = hypernetwork(tiny_model, files)
    whole, _ = video_sampler(comfy, hyper, conds, clip_latent, **kw)
    windowed, _ = video_sampler(comfy, hyper, conds, clip_latent, frames_per_batch=2, **kw)
    assert rel_diff(windowed, whole) <= TOL
    frame0 = ksampler(comfy, hyper, conds, latent_from_batch(comfy, clip_latent, 0, 1), **kw)
    assert rel_diff(whole["samples"][:1], frame0) <= TOL
    plain = ksampler(comfy, hyper, conds, clip_latent, **kw)
    assert rel_diff(whole["samples"][1:], plain["samples"][1:]) > 1e-2
    without = ksampler(comfy, tiny_model, conds, latent_from_batch(comfy, clip_latent, 0, 1), **kw)
    assert rel_diff(frame0, without) > 1e-2           # the hypernetwork does act

    rest = latent_from_batch(comfy, clip_latent, 1, 4)
    for hyper_first in (False, True):   # Store/Patch -> Hypernetwork -> KSampler, and the other way round
        def chain(node_model):
            return node_model if hyper_first else hypernetwork(node_model, files)
        store_model, state = store(comfy, hyper if hyper_first else tiny_model)
        reference = ksampler(comfy, chain(store_model), conds, latent_from_batch(comfy, clip_latent, 0, 1), **kw)
        frames = ksampler(comfy, chain(patch(comfy, hyper if hyper_first else tiny_model, state, reference)),
                          conds, rest, **kw)
        assert rel_diff(torch.cat([reference["samples"], frames["samples"]]), whole) <= TOL, hyper_first

    # A reference recorded with the hypernetwork after Store, frames with it before the patch: refused.
    store_model, state = store(comfy, tiny_model)
    reference = ksampler(comfy, hypernetwork(store_model, files), conds,
                         latent_from_batch(comfy, clip_latent, 0, 1), **kw)
    with pytest.raises(ValueError, match="Cross-Frame Attention Patch: the reference.*was recorded with other "
                                         "self-attention inputs.*hypernetwork.*same nodes in the same order"):
        ksampler(comfy, patch(comfy, hyper, state, reference), conds, rest, **kw)

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


def hypertile(model):
    """HyperTile in 4 x 4 query tiles on the tiny U-Net's 16 x 16 level; swap_size 1 makes the tiling fixed
    (larger values draw it at random per model call, so no two runs compare)."""
    from comfy_extras.nodes_hypertile import HyperTile
    return run_node(HyperTile, model=model, tile_size=32, swap_size=1, max_depth=0, scale_depth=False)[0]


def identical_clip(clip_latent, frames=3):
    frame = clip_latent["samples"][:1]
    return {"samples": frame.repeat(frames, 1, 1, 1), "batch_index": [0] * frames}


def test_hypertile_on_either_side_of_the_cross_frame_node(comfy, tiny_model, conds, clip_latent):
    """HyperTile tiles the query and leaves keys/values to attention's reshape: query tile j attends to piece j
    of every anchor frame, so frame 0 and identical frames stay HyperTile's plain sampling."""
    kw = dict(steps=3)
    tiled = hypertile(tiny_model)
    frame0_latent = latent_from_batch(comfy, clip_latent, 0, 1)
    frame0 = ksampler(comfy, tiled, conds, frame0_latent, **kw)
    assert rel_diff(frame0, ksampler(comfy, tiny_model, conds, frame0_latent, **kw)) > 1e-2   # it tiles
    whole, _ = video_sampler(comfy, tiled, conds, clip_latent, **kw)
    assert rel_diff(whole["samples"][:1], frame0) <= TOL
    assert rel_diff(video_sampler(comfy, tiled, conds, clip_latent, frames_per_batch=2, **kw)[0], whole) <= TOL
    plain = ksampler(comfy, tiled, conds, clip_latent, **kw)
    assert rel_diff(whole["samples"][1:], plain["samples"][1:]) > 1e-2
    same, _ = video_sampler(comfy, tiled, conds, identical_clip(clip_latent), **kw)
    assert rel_diff(same, frame0["samples"].repeat(3, 1, 1, 1)) <= TOL

    store_model, state = store(comfy, tiny_model)   # Store / Patch -> HyperTile -> KSampler
    reference = ksampler(comfy, hypertile(store_model), conds, frame0_latent, **kw)
    frames = ksampler(comfy, hypertile(patch(comfy, tiny_model, state, reference)), conds,
                      latent_from_batch(comfy, clip_latent, 1, 4), **kw)
    assert rel_diff(torch.cat([reference["samples"], frames["samples"]]), whole) <= TOL


def sag(model):
    from comfy_extras.nodes_sag import SelfAttentionGuidance
    return run_node(SelfAttentionGuidance, model=model, scale=0.5, blur_sigma=2.0)[0]


def easycache(model):
    from comfy_extras.nodes_easycache import EasyCacheNode
    return run_node(EasyCacheNode, model=model, reuse_threshold=0.2, start_percent=0.15, end_percent=0.95,
                    verbose=False)[0]


def context_windows(model, length):
    """Core's Context Windows (Manual), standard_static, no overlap (its inputs differ between versions)."""
    import inspect
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode
    values = dict(model=model, context_length=length, context_overlap=0, context_schedule="standard_static",
                  context_stride=1, closed_loop=False, fuse_method="pyramid", dim=0, freenoise=False)
    params = inspect.signature(ContextWindowsManualNode.execute).parameters
    return run_node(ContextWindowsManualNode, **{k: v for k, v in values.items() if k in params})[0]


@pytest.mark.parametrize("node,name", [(sag, "Self-Attention Guidance"), (easycache, "EasyCache")])
def test_whole_call_nodes_refuse_windows(comfy, tiny_model, conds, clip_latent, node, name, monkeypatch):
    """SAG keeps the attention map of one U-Net call, EasyCache one cached change per conditioning: split into
    windows (ours, or core's context windows) they would silently mix windows, so sampling stops at its start
    with an error naming both nodes; the whole clip in one call samples, right after the error."""
    kw = dict(steps=3)
    other = node(tiny_model)
    for fpb in (2, 1):
        with pytest.raises(ValueError, match=f"^Batch Video Sampler: this clip would be sampled in windows of {fpb} "
                                             f"frames \\(frames_per_batch\\), and the model carries {name}, which "
                                             "cannot be split into windows.*frames_per_batch 0.*or remove "
                                             f"{name} from the MODEL chain"):
            video_sampler(comfy, other, conds, clip_latent, frames_per_batch=fpb, **kw)
    with pytest.raises(ValueError, match=f"Batch Video Sampler: this clip would be sampled in the model's context "
                                         f"windows \\(2 of its 5 frames at a time\\), and the model carries {name}"
                                         ".*remove the context-window node"):
        video_sampler(comfy, context_windows(other, 2), conds, clip_latent, **kw)
    # frames_per_batch 0 picks windows by itself when the clip does not fit: free memory for 2 frames only
    mm = comfy.model_management
    need = tiny_model.model.memory_required([4] + list(clip_latent["samples"].shape[1:])) * 1.5
    free = mm.minimum_inference_memory() + max(0, tiny_model.model_size() - tiny_model.loaded_size()) + need * 1.2
    with monkeypatch.context() as m:
        m.setattr(mm, "get_free_memory", lambda dev=None, torch_free_too=False: (free, free) if torch_free_too
                  else free)
        with pytest.raises(ValueError, match=f"windows of 2 frames \\(frames_per_batch 0 \\(auto\\): the whole "
                                             f"clip does not fit.*carries {name}"):
            video_sampler(comfy, other, conds, clip_latent, **kw)
    whole, _ = video_sampler(comfy, other, conds, clip_latent, **kw)
    plain = ksampler(comfy, other, conds, clip_latent, **kw)
    assert torch.isfinite(whole["samples"]).all()
    assert rel_diff(whole["samples"][1:], plain["samples"][1:]) > 1e-2
    fits, _ = video_sampler(comfy, context_windows(other, 5), conds, clip_latent, **kw)   # no split: fine
    assert rel_diff(fits, whole) <= TOL


def test_torch_compile_model_on_either_side(comfy, tiny_model, conds, clip_latent):
    """TorchCompileModel traces the U-Net; the pack's patches run as plain Python inside it (never frozen into
    the graph at their first call), so compiled equals uncompiled in both orders, windows included, and a
    plain compiled model sampled afterwards is unaffected. The 'cudagraphs' backend falls back to eager
    execution on the CPU: the same tracing and guards as 'inductor' without minutes of code generation."""
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    def compiled(model):
        return run_node(TorchCompileModel, model=model, backend="cudagraphs")[0]

    kw = dict(steps=2)
    clip = latent_from_batch(comfy, clip_latent, 0, 2)
    torch._dynamo.reset()
    try:
        whole, _ = video_sampler(comfy, tiny_model, conds, clip, **kw)
        assert rel_diff(video_sampler(comfy, compiled(tiny_model), conds, clip, **kw)[0], whole) <= TOL
        assert rel_diff(video_sampler(comfy, compiled(tiny_model), conds, clip, frames_per_batch=1, **kw)[0],
                        whole) <= TOL
        store_model, state = store(comfy, tiny_model)
        reference = ksampler(comfy, compiled(store_model), conds, latent_from_batch(comfy, clip, 0, 1), **kw)
        frames = ksampler(comfy, compiled(patch(comfy, tiny_model, state, reference)), conds,
                          latent_from_batch(comfy, clip, 1, 1), **kw)
        assert rel_diff(torch.cat([reference["samples"], frames["samples"]]), whole) <= TOL
        plain = ksampler(comfy, compiled(tiny_model), conds, clip, **kw)
        assert rel_diff(plain, ksampler(comfy, tiny_model, conds, clip, **kw)) <= TOL
    finally:
        torch._dynamo.reset()   # compiled code is cached per function: keep it out of the other tests

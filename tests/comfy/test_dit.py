"""Cross-frame attention on DiTs through the same three nodes: a tiny random model of every DiT family built
in-process (Flux.1, Flux.2, Qwen-Image, Chroma, HunyuanVideo, Z-Image, Krea2, Cosmos Predict2, Anima), euler,
fp32, CPU. Invariants: (1) frame 0 of a clip equals plain sampling; (2) identical frames equal plain sampling;
(3) Store -> Patch and windows of any size equal the whole clip, for ancestral samplers too; (4) cfg 1 (cond
only) works. Plus composition with another attn1_patch entry and the errors of unsupported setups.

Needs a ComfyUI whose DiT blocks call the pre-attention hook (0.30.0); elsewhere these tests are skipped with
the reason, and test_dit_refused_without_the_hook checks the clear error instead."""
import sys

import pytest
import torch

import dit_models
from graph_helpers import ksampler, latent_from_batch, patch, registry, rel_diff, store, video_sampler

TOL = 1e-4   # relative to the output scale
FAMILIES = ["flux1", "flux2", "qwen", "chroma", "chroma_radiance", "hunyuan_video", "hunyuan_video15", "zimage",
            "krea2", "cosmos", "anima"]
# Families whose blocks are all of one kind, which the registry names "double".
DOUBLE_ONLY = ("qwen", "zimage", "cosmos", "anima")
DIT = dict(blocks="auto", steps=3, scheduler="simple")


def comfy_patch_module(comfy):
    return sys.modules[comfy.Sampler.__module__.rsplit(".", 1)[0] + ".comfy_patch"]


@pytest.fixture(scope="module", params=FAMILIES)
def dit(request, comfy, needs_hook):
    family = request.param
    model = dit_models.build(comfy, family)
    conds = dit_models.conditioning(family)
    latent = dit_models.clip_latent(family)
    whole = video_sampler(comfy, model, conds, latent, **DIT)[0]
    return dict(family=family, model=model, conds=conds, latent=latent, whole=whole)


def vs(comfy, d, latent=None, **kw):
    return video_sampler(comfy, d["model"], d["conds"], d["latent"] if latent is None else latent,
                         **{**DIT, **kw})


def ks(comfy, d, latent, model=None, **kw):
    return ksampler(comfy, d["model"] if model is None else model, d["conds"], latent, **{**DIT, **kw})


@pytest.mark.thread_sensitive
def test_frame_zero_is_plain_sampling_and_the_method_acts(comfy, dit):
    whole, latent = dit["whole"], dit["latent"]
    assert torch.isfinite(whole["samples"]).all()
    frame0 = ks(comfy, dit, latent_from_batch(comfy, latent, 0, 1))
    plain = ks(comfy, dit, latent)
    assert rel_diff(whole["samples"][:1], frame0["samples"]) <= TOL
    assert rel_diff(whole["samples"][1:], plain["samples"][1:]) > 1e-2


@pytest.mark.thread_sensitive
def test_identical_frames_equal_plain_sampling(comfy, dit):
    frame = dit["latent"]["samples"][:1]
    clip = {"samples": frame.repeat(3, *([1] * (frame.ndim - 1))), "batch_index": [0, 0, 0]}
    single = ks(comfy, dit, {"samples": frame})
    for fpb in (0, 2):
        cross, _ = vs(comfy, dit, clip, frames_per_batch=fpb)
        for k in range(3):
            assert rel_diff(cross["samples"][k:k + 1], single) <= TOL


@pytest.mark.thread_sensitive
@pytest.mark.parametrize("frames_per_batch", [1, 3])
def test_windows_equal_whole_clip(comfy, dit, frames_per_batch):
    windowed, _ = vs(comfy, dit, frames_per_batch=frames_per_batch)
    assert rel_diff(windowed, dit["whole"]) <= TOL


def test_windows_equal_whole_clip_with_an_ancestral_sampler(comfy, dit):
    """One sampler pass draws the whole clip's noise, so the DiT adapter must also read the window: frames of
    window 2 attend to frame 0 and frame 1 of the same evaluation."""
    whole, _ = vs(comfy, dit, sampler_name="euler_ancestral")
    windowed, _ = vs(comfy, dit, sampler_name="euler_ancestral", frames_per_batch=1)
    assert rel_diff(windowed, whole) <= TOL
    assert rel_diff(whole, dit["whole"]) > 1e-3     # the sampler did change something


def test_store_then_patch_equals_whole_clip(comfy, dit):
    latent = dit["latent"]
    store_model, state = store(comfy, dit["model"], blocks="auto")
    reference = ks(comfy, dit, latent_from_batch(comfy, latent, 0, 1), model=store_model)
    assert state.filled
    assert rel_diff(reference, dit["whole"]["samples"][:1]) <= TOL
    rest = ks(comfy, dit, latent_from_batch(comfy, latent, 1, 3), model=patch(comfy, dit["model"], state,
                                                                               reference))
    assert rel_diff(torch.cat([reference["samples"], rest["samples"]]), dit["whole"]) <= TOL
    # frame by frame after the reference: Batch Video Sampler anchored on the Store state, one frame per batch
    rest_fbf, _ = vs(comfy, dit, latent_from_batch(comfy, latent, 1, 3), state=state, reference_latent=reference,
                     frames_per_batch=1)
    assert rel_diff(rest_fbf["samples"], dit["whole"]["samples"][1:]) <= TOL


def test_default_blocks_per_family(comfy, dit):
    _, state = store(comfy, dit["model"], blocks="auto")
    expected = {"qwen": {"double[2:]"}, "zimage": {"double[1:]"}, "krea2": {"single[1:]"},
                "cosmos": {"double[1:]"}, "anima": {"double[1:]"}}.get(dit["family"], {"single"})
    assert state.blocks == frozenset(expected)


@pytest.mark.parametrize("kw", [dict(blocks="double+single"), dict(blocks="double"),
                                dict(anchors="first"), dict(include_self=True)])
def test_options_keep_windows_exact(comfy, dit, kw):
    if dit["family"] in DOUBLE_ONLY and "single" in kw.get("blocks", ""):
        kw = dict(blocks="double")
    if dit["family"] == "krea2" and "double" in kw.get("blocks", ""):
        kw = dict(blocks="single")
    one, _ = vs(comfy, dit, **kw)
    windowed, _ = vs(comfy, dit, frames_per_batch=2, **kw)
    assert rel_diff(windowed, one) <= TOL
    assert rel_diff(one, dit["whole"]) > 1e-3


def test_cfg_one_guidance_distilled(comfy, dit):
    """cfg 1: only the positive conditioning is evaluated (Flux.1-dev / schnell use it this way)."""
    cross, _ = vs(comfy, dit, cfg=1.0)
    windowed, _ = vs(comfy, dit, cfg=1.0, frames_per_batch=2)
    plain = ks(comfy, dit, dit["latent"], cfg=1.0)
    frame0 = ks(comfy, dit, latent_from_batch(comfy, dit["latent"], 0, 1), cfg=1.0)
    assert rel_diff(windowed, cross) <= TOL
    assert rel_diff(cross["samples"][:1], frame0) <= TOL
    assert rel_diff(cross["samples"][1:], plain["samples"][1:]) > 1e-2


def test_composes_with_another_attn1_patch(comfy, dit):
    """Another pack's DiT pre-attention patch, before and after ours: still called, changes nothing, and the
    one after ours sees the extended keys ([txt; first; txt; previous]) with a pe as long as them."""
    if "attention override" in registry(comfy).family_of(dit["model"].model).way.name:
        pytest.skip("this family is reached through the attention override, not attn1_patch: its composition "
                    "with other overrides is tested in test_attention_override.py")
    seen = []

    def other_pack_patch(q, k, v, pe=None, attn_mask=None, extra_options=None):
        seen.append((extra_options["block_type"], extra_options["block_index"], k.shape[2] // q.shape[2],
                     None if pe is None else pe.shape[2] // q.shape[2]))
        return {}

    upstream = dit["model"].clone()
    upstream.set_model_attn1_patch(other_pack_patch)
    out, _ = video_sampler(comfy, upstream, dit["conds"], dit["latent"], **DIT)
    assert rel_diff(out, dit["whole"]) <= TOL
    assert seen and {s[2] for s in seen} == {1}
    seen.clear()
    downstream = comfy_patch_module(comfy)
    store_model, state = store(comfy, dit["model"], blocks="auto")
    reference = ks(comfy, dit, latent_from_batch(comfy, dit["latent"], 0, 1), model=store_model)
    patched = patch(comfy, dit["model"], state, reference)
    patched.set_model_attn1_patch(other_pack_patch)
    ks(comfy, dit, latent_from_batch(comfy, dit["latent"], 1, 2), model=patched)
    chosen = downstream.family_of(dit["model"].model).make_patch(state.blocks, "test").selects
    assert {(s[2], s[3]) for s in seen if chosen(s[0], s[1])} == {(2, 2)}
    assert {s[2] for s in seen if not chosen(s[0], s[1])} == {1}


def test_unet_block_names_on_a_dit_are_refused(comfy, dit):
    name = registry(comfy).family_of(dit["model"].model).name
    with pytest.raises(ValueError, match=f"Batch Video Sampler: blocks 'output' are not block kinds of this {name} "
                                         "model.*Choose auto"):
        vs(comfy, dit, blocks="output", steps=1)
    if dit["family"] == "qwen":
        with pytest.raises(ValueError, match="blocks 'single' are not block kinds of this Qwen-Image model"):
            vs(comfy, dit, blocks="single", steps=1)
    kind = next(iter(registry(comfy).family_of(dit["model"].model).block_lists))
    with pytest.raises(ValueError, match=f"blocks '{kind}\\[99:\\]' select none of this {name} model's blocks"):
        vs(comfy, dit, blocks=f"{kind}[99:]", steps=1)


def test_qwen_text_attention_mask_is_refused(comfy, needs_hook):
    model = dit_models.build(comfy, "qwen")
    pos, neg = dit_models.conditioning("qwen")
    mask = torch.ones(1, 8)
    mask[:, 6:] = 0
    pos = [[pos[0][0], {"attention_mask": mask}]]
    latent = dit_models.clip_latent("qwen", frames=2)
    with pytest.raises(ValueError, match="Batch Video Sampler: the Qwen-Image conditioning carries a text "
                                         "attention mask"):
        video_sampler(comfy, model, (pos, neg), latent, **{**DIT, "steps": 1})


def test_qwen_video_shaped_latent_is_refused(comfy, needs_hook):
    model = dit_models.build(comfy, "qwen")
    video = {"samples": torch.randn(1, 16, 3, 16, 16)}
    with pytest.raises(ValueError, match="Batch Video Sampler: latent_image holds one video of 3 latent frames"
                                         ".*encode the frames one by one"):
        video_sampler(comfy, model, dit_models.conditioning("qwen"), video, **{**DIT, "steps": 1})


def test_other_dit_families_are_refused(comfy):
    """Wan calls a hook of the same name after attention, with other inputs, and has no declaration: the model
    class decides, and it gets the error naming what is supported."""
    check = comfy_patch_module(comfy)
    from comfy.ldm.wan.model import WanModel

    class FakeModel:
        diffusion_model = WanModel.__new__(WanModel)

    torch.nn.Module.__init__(FakeModel.diffusion_model)
    with pytest.raises(ValueError, match="Store Reference Attention: this model's diffusion model is a "
                                         "WanModel, which no model family of the pack covers.*Flux.1.*Chroma.*"
                                         "Qwen-Image and Qwen-Image-Edit on ComfyUI 0.30.0 or newer.*Wan video "
                                         "model.*Cross-Window Anchors"):
        check.check_supported(FakeModel(), frozenset({"single"}), "Store Reference Attention")


@pytest.mark.parametrize("tiny,name,hook_words", [
    ("flux1", "Flux", "self-attention hook in these blocks"),
    ("cosmos", "Cosmos Predict2", "self-attention patch followed by the attention override in these blocks")])
def test_dit_refused_without_the_hook(comfy, hook, tiny, name, hook_words):
    """On a ComfyUI whose DiT blocks have no pre-attention hook (0.3.64: Flux's blocks, and Cosmos Predict2's,
    which that version has too), the model gets a clear error naming the version that has it, instead of
    silently sampling without cross-frame attention."""
    if hook:
        pytest.skip("this ComfyUI has the DiT pre-attention hook; the refusal applies to older versions")
    model = dit_models.build(comfy, tiny)
    conds = dit_models.conditioning(tiny)
    with pytest.raises(ValueError, match=f"Batch Video Sampler: this is a {name} model, but ComfyUI 0.3.64 has no "
                                         f"{hook_words}.*Update ComfyUI to 0.30.0 or newer"):
        video_sampler(comfy, model, conds, dit_models.clip_latent(tiny, frames=2), **{**DIT, "steps": 1})

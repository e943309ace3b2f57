"""The example API workflows, pointed at the fixture files, and the deliberately broken prompts.

Widget overrides go by input name, so they apply to whatever node of the example uses that input; the
schemas themselves are never restated here (the tests read them from the live /object_info).
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflows"))
import cfa_workflow_tools as wt  # noqa: E402

TEST_SIZE = 64          # frames are resized to this (pixels); 8x8 latents keep CPU sampling fast
TEST_STEPS = 2
BAD_SIZE = 96           # the resolution-mismatch prompt samples frames at this size

# What each example must produce, beyond "it succeeded": (output kind, number of frames/images).
# 'clip' means: as many frames as the fixture video has.
EXPECTED = {
    "video_edit": ("video", "clip"),
    "video_edit_controlnet": ("video", "clip"),
    "manual_store_load": ("video", "clip"),
    "image_reference": ("images", 1),
    # one side-by-side video (with | without | fused, 8 px apart) and the three Measure nodes' plots
    "compare_consistency": ("compare", "clip"),
    "flux_video_edit": ("video", "clip"),
    "zimage_video_edit": ("video", "clip"),
    "video_edit_fusion": ("video", "clip"),
    # the empty latent's 81 frames (plus the Measure node's plot); listed for completeness: it is NOT_RUNNABLE
    "wan_long_video": ("video", 81),
}
# Examples on a DiT: they need ComfyUI's DiT pre-attention hook (0.30.0); older versions refuse them clearly.
DIT_EXAMPLES = {"flux_video_edit": (0, 30, 0), "zimage_video_edit": (0, 30, 0)}
# Examples no test fixture can run: why (their loading and UI->API conversion are still tested).
NOT_RUNNABLE = {
    "zimage_video_edit": "ComfyUI recognises a Z-Image file only at Z-Image's own width (3840: about 0.9 billion "
                         "parameters even with one layer) and builds its Qwen3-4B text encoder at full size "
                         "whatever the file holds, so no tiny fixture loads; the method on Z-Image runs in "
                         "process on a tiny NextDiT (tests/comfy/test_dit.py, test_attention_override.py)",
    "wan_long_video": "CLIPLoader type wan builds its UMT5-XXL text encoder from a fixed config at full size "
                      "whatever the file holds (comfy/sd.py, comfy/text_encoders/wan.py), so no tiny fixture "
                      "loads; Cross-Window Anchors in core's Wan context windows runs in process on a tiny Wan "
                      "2.1 (tests/comfy/test_window_anchors_wan.py)",
}
COMPARE_SPACING = 8
COMPARE_PANELS = 3
PLOT_SIZE = (1024, 768)  # Measure Temporal Consistency's plot (width, height)
# Extra overrides per example: the ControlNet one runs in chunks (6 frames as 4 + 2) so the per-chunk
# slicing of the hint batch is exercised end to end.
PER_EXAMPLE = {
    "video_edit_controlnet": {"frames_per_batch": 4},
}


def overrides(fixtures):
    """{(class_type or None, input name): value} applied to the examples for the tests."""
    return {
        (None, "ckpt_name"): fixtures["checkpoint"],
        (None, "control_net_name"): fixtures["controlnet"],
        ("UNETLoader", "unet_name"): fixtures["flux"],
        ("VAELoader", "vae_name"): fixtures["flux_vae"],
        ("LoadVideo", "file"): fixtures["video"],
        ("LoadImage", "image"): fixtures["image"],
        ("ImageScale", "width"): TEST_SIZE,
        ("ImageScale", "height"): TEST_SIZE,
        (None, "steps"): TEST_STEPS,
    }


def apply_overrides(api, fixtures, name=None):
    api = copy.deepcopy(api)
    rules = overrides(fixtures)
    extra = PER_EXAMPLE.get(name, {})
    for entry in api.values():
        inputs = entry["inputs"]
        for key in list(inputs):
            if wt._is_link(inputs[key]):
                continue
            for (cls, inp), value in rules.items():
                if inp == key and cls in (None, entry["class_type"]):
                    inputs[key] = value
            if key in extra:
                inputs[key] = extra[key]
        entry.pop("_meta", None)
    return api


def dit_supported(name, comfy_version) -> bool:
    """False for a DiT example on a ComfyUI without the DiT hook (there it must fail with our clear error)."""
    since = DIT_EXAMPLES.get(name)
    return since is None or wt.version_tuple(comfy_version) >= since


def not_runnable(name, comfy_version) -> str | None:
    """Why an example cannot be run by the tests here, or None when it can."""
    if name in NOT_RUNNABLE:
        return NOT_RUNNABLE[name]
    if not dit_supported(name, comfy_version):
        return (f"{name} needs the DiT hook of ComfyUI 0.30.0; on {comfy_version} the pack refuses the family "
                "(tests/comfy/test_dit.py::test_dit_refused_without_the_hook checks that error), and this "
                "version's model detection takes Flux's width as 3072 whatever the file holds, so the tiny "
                "Flux fixture cannot even load here")
    return None


# The stand-in for T5-XXL (see cfa_make_fixtures.py): DualCLIPLoader becomes CLIPLoader on the fixture's
# CLIP-L, feeding the same links; the tiny Flux takes CLIP-L's 768 channels.
TEXT_ENCODER_STANDIN = {"class_type": "CLIPLoader", "type": "stable_diffusion"}


def with_text_encoder_standin(api, fixtures, new_id=None):
    """A copy of `api` whose DualCLIPLoader nodes are replaced by CLIPLoader on the fixture CLIP-L (under
    `new_id`, or a fresh id), every link to them relinked."""
    api = copy.deepcopy(api)
    for old in nodes_of(api, "DualCLIPLoader"):
        nid = str(new_id) if new_id is not None else _fresh_id(api)
        api[nid] = {"class_type": TEXT_ENCODER_STANDIN["class_type"],
                    "inputs": {"clip_name": fixtures["clip_l"], "type": TEXT_ENCODER_STANDIN["type"]}}
        _replace_links(api, [old, 0], [nid, 0])
        del api[old]
    return api


def load_api(name):
    return wt.load_json(wt.API_DIR / f"{name}.json")


def nodes_of(api, class_type):
    return [nid for nid, e in api.items() if e["class_type"] == class_type]


def _replace_links(api, old, new):
    for entry in api.values():
        for k, v in entry["inputs"].items():
            if v == old:
                entry["inputs"][k] = list(new)


def _fresh_id(api):
    return str(max(int(k) for k in api) + 1)


def load_before_store(fixtures):
    """manual_store_load with the STORE sampler removed: the patch's state is never filled.

    The patch's reference_latent now comes straight from the (unsampled) first-frame latent, so nothing
    samples with the Store node's model before the patch runs.
    """
    api = apply_overrides(load_api("manual_store_load"), fixtures, "manual_store_load")
    (patch,) = nodes_of(api, "CFA_CrossFrameAttentionPatch")
    store_sampler = api[patch]["inputs"]["reference_latent"][0]
    first_latent = api[store_sampler]["inputs"]["latent_image"]
    _replace_links(api, [store_sampler, 0], first_latent)
    del api[store_sampler]
    return api


def resolution_mismatch(fixtures):
    """manual_store_load whose LOAD frames are re-encoded at BAD_SIZE while the reference stays at TEST_SIZE."""
    api = apply_overrides(load_api("manual_store_load"), fixtures, "manual_store_load")
    (patch,) = nodes_of(api, "CFA_CrossFrameAttentionPatch")
    load_sampler = next(nid for nid, e in api.items()
                        if e["inputs"].get("model") == [patch, 0])
    rest = api[load_sampler]["inputs"]["latent_image"][0]           # LatentFromBatch (other frames)
    encode = api[rest]["inputs"]["samples"][0]                       # VAEEncode of the clip
    scale = api[encode]["inputs"]["pixels"][0]                       # ImageScale
    big_scale, big_encode = _fresh_id(api), str(int(_fresh_id(api)) + 1)
    api[big_scale] = copy.deepcopy(api[scale])
    api[big_scale]["inputs"].update(width=BAD_SIZE, height=BAD_SIZE)
    api[big_encode] = copy.deepcopy(api[encode])
    api[big_encode]["inputs"]["pixels"] = [big_scale, 0]
    api[rest]["inputs"]["samples"] = [big_encode, 0]
    return api


def store_reference_graph(fixtures, reference_seed, frames_seed=1, keep_recordings=None):
    """API prompt, nodes "1".."8": a reference image sampled by KSampler through Store Reference Attention ("6"),
    then three frames by Batch Video Sampler ("8") anchored on it (state + reference_latent links). Callers add
    their outputs. keep_recordings None leaves that (optional, later) input out, as prompts written before it
    existed do: they must still run."""
    ckpt, size, steps = fixtures["checkpoint"], TEST_SIZE, TEST_STEPS
    sampling = {"steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    store = {"model": ["1", 0], "blocks": "output", "bank_device": "auto", "bank_dtype": "auto"}
    if keep_recordings is not None:
        store["keep_recordings"] = keep_recordings
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 3}},
        "6": {"class_type": "CFA_StoreReferenceAttention", "inputs": store},
        "7": {"class_type": "KSampler",
              "inputs": {"model": ["6", 0], "seed": reference_seed, "positive": ["2", 0], "negative": ["3", 0],
                         "latent_image": ["4", 0], **sampling}},
        "8": {"class_type": "CFA_BatchVideoSampler",
              "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0],
                         "seed": frames_seed, **sampling, "frames_per_batch": 0, "anchors": "first+previous",
                         "include_self": False, "blocks": "output", "start_percent": 0.0, "end_percent": 1.0,
                         "bank_device": "auto", "bank_dtype": "auto", "output_state": False,
                         "state": ["6", 1], "reference_latent": ["7", 0]}},
    }


def with_seed(api, seed):
    """A copy whose seeds differ, so ComfyUI's cache cannot answer it without running."""
    api = copy.deepcopy(api)
    for entry in api.values():
        if "seed" in entry["inputs"] and not wt._is_link(entry["inputs"]["seed"]):
            entry["inputs"]["seed"] = seed
    return api


def dumps(api):
    return json.dumps(api, indent=1)


# --- output checks shared by the server and browser tests ---------------------------------------------

def video_frames(path):
    """(frames as uint8 [N, H, W, 3], frames per second) of a video file, decoded with PyAV."""
    import av
    import numpy as np

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        rate = float(stream.average_rate) if stream.average_rate else None
    return (np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)), rate


def check_not_blank(frames, what):
    # NaNs anywhere in the U-Net or VAE end up as flat (all 0) frames after the clamp to uint8
    for i, f in enumerate(frames):
        assert f.std() > 1.0, f"{what}: frame {i} is flat (std {f.std():.3f}): NaNs or a dead model?"


def check_example_outputs(name, files, fixtures):
    """Assert the files an example saved are what EXPECTED says: count, size, playable video."""
    assert name in EXPECTED, f"add the expected output of the new example {name} to cfa_test_graphs.EXPECTED"
    kind, count = EXPECTED[name]
    expected_n = fixtures["frames"] if count == "clip" else count
    size = TEST_SIZE
    assert files, f"{name}: no output file in /history"
    for f in files:
        assert f.is_file() and f.stat().st_size > 0, f"{name}: output {f} missing or empty"
    if kind in ("video", "compare"):
        videos = [f for f in files if f.suffix.lower() in (".mp4", ".webm", ".mov", ".mkv")]
        assert len(videos) == 1, f"{name}: expected one video, got {files}"
        frames, rate = video_frames(videos[0])
        assert frames.shape[0] == expected_n, f"{name}: {frames.shape[0]} frames, expected {expected_n}"
        width = size if kind == "video" else COMPARE_PANELS * size + (COMPARE_PANELS - 1) * COMPARE_SPACING
        assert frames.shape[1:3] == (size, width), f"{name}: frames are {frames.shape[1:3]}, expected {width}x{size}"
        assert rate is not None and abs(rate - fixtures["fps"]) < 0.01, \
            f"{name}: {rate} fps, the input clip had {fixtures['fps']}"
        check_not_blank(frames, name)
        if kind == "compare":
            _check_plots(name, [f for f in files if f.suffix.lower() == ".png"], COMPARE_PANELS)
    else:
        import numpy as np
        from PIL import Image

        images = [f for f in files if f.suffix.lower() in (".png", ".jpg", ".webp")]
        assert len(images) == expected_n, f"{name}: expected {expected_n} image(s), got {files}"
        for f in images:
            with Image.open(f) as im:
                assert im.size == (size, size), f"{name}: {f.name} is {im.size}"
                check_not_blank([np.asarray(im.convert("RGB"))], name)


def _check_plots(name, pngs, count):
    import numpy as np
    from PIL import Image

    assert len(pngs) == count, f"{name}: expected {count} Measure Temporal Consistency plots, got {pngs}"
    for f in pngs:
        with Image.open(f) as im:
            assert im.size == PLOT_SIZE, f"{name}: plot {f.name} is {im.size}"
            assert np.asarray(im.convert("RGB")).std() > 10, f"{name}: plot {f.name} is blank"

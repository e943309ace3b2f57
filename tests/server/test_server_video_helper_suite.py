"""Video Helper Suite (VHS, Kosinkadink/ComfyUI-VideoHelperSuite) in our examples' place: its Load Video
(Upload) feeds the clip, Video Combine writes the result at the rate Load Video reported, on a real server.

VHS registers HTTP routes on ComfyUI's PromptServer when it is imported, so it loads only in a running server,
not in process: this test starts its own server over a base directory holding our pack and VHS (the session's
server stays as it is). What must hold: every frame VHS loads comes out of Batch Video Sampler and VAE Decode
(the IMAGE batch keeps its length and order), Measure Temporal Consistency accepts VHS's frames as the source
of the same clip, and Video Combine, given Load Video's fps through Video Info, writes as many frames as
the clip at that rate (frame rates never pass through our nodes: they travel on VHS's own links).

VHS is on no package registry: the test finds a checkout through $CFA_VHS_PATH (default
~/.cache/cfa/custom_nodes/ComfyUI-VideoHelperSuite) and skips, saying so, without one. Video Combine writes a
GIF (Pillow), so no ffmpeg is needed; Load Video reads the fixture's MP4 with OpenCV."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import cfa_serverkit as kit

ENV = "CFA_VHS_PATH"
DEFAULT = Path.home() / ".cache" / "cfa" / "custom_nodes" / "ComfyUI-VideoHelperSuite"


def vhs_path() -> Path | None:
    path = Path(os.environ.get(ENV) or DEFAULT).expanduser()
    return path if (path / "__init__.py").is_file() and (path / "videohelpersuite").is_dir() else None


@pytest.fixture(scope="session")
def vhs():
    """The checkout, found before the (slow, session-scoped) server fixtures are built."""
    path = vhs_path()
    if path is None:
        pytest.skip(f"Video Helper Suite test skipped: no checkout at ${ENV} (default {DEFAULT}); it is on no "
                    "package registry, so put a checkout of Kosinkadink/ComfyUI-VideoHelperSuite there "
                    "(see docs/testing.md)")
    return path


@pytest.fixture(scope="module")
def vhs_server(vhs, comfyui_path, cfa_base, tmp_path_factory):
    source, info = cfa_base
    base = kit.prepare_base_directory(tmp_path_factory.mktemp("vhs_base"))
    (base / "custom_nodes" / "ComfyUI-VideoHelperSuite").symlink_to(vhs, target_is_directory=True)
    checkpoint = Path("models/checkpoints") / info["checkpoint"]
    (base / checkpoint).symlink_to(source / checkpoint)
    # A copy: newer ComfyUI refuses input files that resolve outside the input folder.
    shutil.copyfile(source / "input" / info["video"], base / "input" / info["video"])
    server = kit.ComfyServer(comfyui_path, base)
    server.start()
    try:
        object_info = server.object_info()
        if "VHS_LoadVideo" not in object_info:
            pytest.fail(f"the server did not load Video Helper Suite from {vhs}:\n{server.log_tail(8000)}")
        yield server, info
    finally:
        server.stop()
        kit.copy_log(server, base.parent / "comfyui-vhs-server.log")


def vhs_prompt(info: dict) -> dict:
    """Load Video -> VAE Encode -> Batch Video Sampler -> VAE Decode -> Video Combine (at Load Video's fps),
    and Measure Temporal Consistency of the result against the loaded frames."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": info["checkpoint"]}},
        "load": {"class_type": "VHS_LoadVideo", "inputs": {
            "video": info["video"], "force_rate": 0, "custom_width": 0, "custom_height": 0,
            "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1}},
        "info": {"class_type": "VHS_VideoInfo", "inputs": {"video_info": ["load", 3]}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["load", 0], "vae": ["ckpt", 2]}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "an oil painting", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "sample": {"class_type": "CFA_BatchVideoSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["encode", 0],
            "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.6,
            "frames_per_batch": 0, "anchors": "first+previous", "include_self": False, "blocks": "output",
            "start_percent": 0.0, "end_percent": 1.0, "bank_device": "auto", "bank_dtype": "auto",
            "output_state": False}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "combine": {"class_type": "VHS_VideoCombine", "inputs": {
            "images": ["decode", 0], "frame_rate": ["info", 5], "loop_count": 0, "filename_prefix": "cfa_vhs",
            "format": "image/gif", "pingpong": False, "save_output": True}},
        "measure": {"class_type": "CFA_MeasureTemporalConsistency", "inputs": {
            "images": ["decode", 0], "occlusion_mask": True, "label": "via VHS", "source": ["load", 0]}},
    }


def test_frames_and_rate_pass_through_with_video_helper_suite(vhs_server):
    from PIL import Image
    server, info = vhs_server
    result = server.run_prompt(vhs_prompt(info))
    assert result.outcome == "success", result.describe()
    gifs = [p for p in kit.output_files(server, result, kind="gifs") if p.suffix == ".gif"]
    assert len(gifs) == 1, result.outputs()
    with Image.open(gifs[0]) as gif:
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info.get("duration"))
        assert gif.n_frames == info["frames"]
        assert gif.size == (info["width"], info["height"])
    # GIF stores frame times in 10 ms units: 1000 / fps rounded to them.
    assert all(abs(d - 1000.0 / info["fps"]) <= 10 for d in durations), durations
    measured = result.outputs()["measure"]
    assert measured.get("text"), measured

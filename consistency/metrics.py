"""Per-frame temporal-consistency scores of a clip, optionally against its source clip.

All scores are mean absolute differences on the 0-255 scale, so they read like pixel values:
- warp error (frame t): |frame t - frame t-1 warped onto t along the flow|, averaged over the trusted pixels
  (or all pixels with masking off). What is left after motion is explained: flicker, popping, ghosting.
- brightness flicker (frame t): |mean luma of t - mean luma of t-1|.
- drift (frame t): mean over R, G, B of |mean colour of t - mean colour of frame 0|: slow wander of the look
  (RGB drift; kept for programs that read it; the two below split it into readable parts, see drift.py).
- luma drift (frame t): mean Rec. 709 luma of t minus that of frame 0 (0-255, signed: + = brighter).
- chroma drift (frame t): CIELAB a*b* distance of the mean colour of t from frame 0's (a colour cast; delta E
  units, lightness left out).
- frame difference (frame t): |frame t - frame t-1| without motion compensation, for reference.
Frame 0 has no predecessor: its warp error, flicker and frame difference are None.
With window joins given (joins.py): the change across each join, and per frame pair against the median frame
pair inside a single window.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import cv2
import numpy as np
import torch

from .drift import chroma_distance, drift_curves, frame_lab, frame_luma
from .flow import DisFlow, FlowFunction
from .joins import as_spans, inside_pairs, join_jumps, level_change, pair_mean
from .warp import Grid, consistent_pixels, flow_magnitude, warp

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # Rec. 601, as OpenCV's RGB->gray


def to_uint8_frames(frames) -> np.ndarray:
    """T x H x W x 3 uint8 from a float tensor/array in [0, 1] (ComfyUI IMAGE) or a uint8 array."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach()
        if frames.dtype == torch.uint8:
            return frames.cpu().numpy()
        return (frames.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _mean(values) -> Optional[float]:
    v = _finite(values)
    return float(np.mean(v)) if v else None


def _argmax(values) -> Optional[int]:
    best, where = -math.inf, None
    for i, v in enumerate(values):
        if v is not None and math.isfinite(v) and v > best:
            best, where = v, i
    return where


@dataclass
class SequenceCurves:
    """Per-frame scores of one clip (index = frame number)."""
    warp_error: list = field(default_factory=list)
    flicker: list = field(default_factory=list)
    drift: list = field(default_factory=list)
    frame_difference: list = field(default_factory=list)
    luma_drift: list = field(default_factory=list)
    chroma_drift: list = field(default_factory=list)

    def summary(self) -> dict:
        worst = _argmax(self.warp_error)
        flicker_worst = _argmax(self.flicker)
        return {
            "warp_error_mean": _mean(self.warp_error),
            "warp_error_max": None if worst is None else self.warp_error[worst],
            "warp_error_worst_frame": worst,
            "flicker_mean": _mean(self.flicker),
            "flicker_max": None if flicker_worst is None else self.flicker[flicker_worst],
            "flicker_worst_frame": flicker_worst,
            "drift_final": self.drift[-1] if self.drift else None,
            "drift_max": max(self.drift) if self.drift else None,
            "frame_difference_mean": _mean(self.frame_difference),
            "luma_drift_final": self.luma_drift[-1] if self.luma_drift else None,
            "luma_drift_max_abs": max(map(abs, self.luma_drift)) if self.luma_drift else None,
            # the signed value furthest from frame 0 (a clip that darkens reads -12, not 12)
            "luma_drift_extreme": max(self.luma_drift, key=abs) if self.luma_drift else None,
            "chroma_drift_final": self.chroma_drift[-1] if self.chroma_drift else None,
            "chroma_drift_max": max(self.chroma_drift) if self.chroma_drift else None,
        }

    def as_dict(self) -> dict:
        return {"warp_error": self.warp_error, "flicker": self.flicker, "drift": self.drift,
                "frame_difference": self.frame_difference, "luma_drift": self.luma_drift,
                "chroma_drift": self.chroma_drift}


@dataclass
class ConsistencyReport:
    frames: int
    height: int
    width: int
    flow_method: str
    flow_on: str            # "source" or "result": whose frames the flow was computed on
    masked: bool
    result: SequenceCurves
    source: Optional[SequenceCurves]
    flow_magnitude: list    # mean |flow| in pixels per frame (None at frame 0)
    trusted_fraction: list  # share of pixels that passed the occlusion check (1.0 unmasked; None at frame 0)
    # Window joins: {"spans", "note", "result": per-join rows, "source": rows or None, "inside_pairs": how many
    # frame pairs lie outside every join, "inside_median": per measure, of one such pair}; None when no joins
    # were given.
    joins: Optional[dict] = None

    def worst_join(self) -> Optional[dict]:
        """The result's join with the largest ratio (its change per frame pair against one frame pair inside a
        single window), over all measures."""
        best = None
        for row in (self.joins or {}).get("result") or []:
            for name in JOIN_MEASURES:
                ratio = row[f"{name}_ratio"]
                if ratio is not None and (best is None or ratio > best["ratio"]):
                    best = {"frame": row["frame"], "span": row["span"], "measure": name,
                            "jump": row[f"{name}_jump"], "ratio": ratio}
        return best

    def summary(self) -> dict:
        out = {"result": self.result.summary(), "source": self.source.summary() if self.source else None,
               "flow_magnitude_mean": _mean(self.flow_magnitude),
               "trusted_fraction_mean": _mean(self.trusted_fraction)}
        r = out["result"]["warp_error_mean"]
        s = out["source"]["warp_error_mean"] if out["source"] else None
        out["warp_error_ratio"] = (r / s) if (r is not None and s) else None
        out["worst_join"] = self.worst_join()
        return out

    def join_lines(self) -> list:
        """One line per window join: the result's jump of each measure and its ratio per frame pair to the
        inside median (the source's ratios beside them when it was given)."""
        if not self.joins:
            return []
        lines = []
        sources = self.joins["source"] or [None] * len(self.joins["result"])
        missing = "no change" if self.joins["inside_pairs"] else "nothing"  # why a ratio is None
        for row, src in zip(self.joins["result"], sources):
            where = _where(row["span"])
            parts = []
            for name in JOIN_MEASURES:
                jump, ratio = row[f"{name}_jump"], row[f"{name}_ratio"]
                if jump is None:
                    continue
                parts.append(f"{JOIN_LABELS[name]} {jump:.2f}"
                             + (f" ({ratio:.1f}x inside)" if ratio is not None else f" ({missing} inside to compare)"))
            line = f"join at {where}: " + ", ".join(parts)
            if src is not None:
                ratios = [f"{JOIN_LABELS[n]} {src[f'{n}_ratio']:.1f}x" for n in JOIN_MEASURES
                          if src[f"{n}_ratio"] is not None]
                if ratios:
                    line += "; source " + ", ".join(ratios)
            lines.append(line)
        return lines

    def text(self) -> str:
        """The summary line, then one line per window join (the node's text output)."""
        note = self.joins["note"] if self.joins else ""
        if self.joins and self.joins["spans"]:
            inside = self.joins["inside_pairs"]
            how = (f"ratio = a join's change per frame pair / the median frame pair inside a single window "
                   f"({inside} such pairs)" if inside else
                   "no frame pair lies inside a single window (every pair touches a join): no ratio")
            note = f"{note}; {how}" if note else how
        return "\n".join([self.summary_line(), *([f"window joins: {note}"] if note else []), *self.join_lines()])

    def summary_line(self) -> str:
        """One line for the node's face: the result's scores, the source's beside them, and how they were
        measured (so a reader knows what the numbers mean)."""
        s = self.summary()
        r, src = s["result"], s["source"]

        def num(v, digits=2, sign=""):
            return "n/a" if v is None else f"{v:{sign}.{digits}f}"

        worst = s["worst_join"]
        join = "" if worst is None else (
            f"; worst join at {_where(worst['span'])}: {JOIN_LABELS[worst['measure']]} jump {worst['jump']:.2f} "
            f"({worst['ratio']:.1f}x inside windows per frame pair)")
        if worst is None and self.joins and self.joins["spans"]:
            missing = "no change" if self.joins["inside_pairs"] else "nothing"
            join = f"; window joins: no ratio ({missing} inside a single window to compare)"

        how = (f"{self.frames} frames, flow: {self.flow_method} on the {self.flow_on}"
               + (", occlusions masked" if self.masked else ", no occlusion mask"))
        if src is None:
            return (f"warp error {num(r['warp_error_mean'])} (worst frame {r['warp_error_worst_frame']}), "
                    f"flicker {num(r['flicker_mean'])}, luma drift {num(r['luma_drift_extreme'], 1, '+')}, "
                    f"colour drift {num(r['chroma_drift_max'], 1)} dE{join} "
                    f"[0-255; {how}; connect the source for a reference]")
        ratio = s["warp_error_ratio"]
        return (f"warp error {num(r['warp_error_mean'])} vs source {num(src['warp_error_mean'])}"
                + (f" ({ratio:.2f}x)" if ratio is not None else "")
                + f", worst frame {r['warp_error_worst_frame']}; flicker {num(r['flicker_mean'])} vs "
                  f"{num(src['flicker_mean'])}; luma drift {num(r['luma_drift_extreme'], 1, '+')} vs "
                  f"{num(src['luma_drift_extreme'], 1, '+')}, colour drift {num(r['chroma_drift_max'], 1)} vs "
                  f"{num(src['chroma_drift_max'], 1)} dE{join} [0-255; {how}]")

    def to_dict(self) -> dict:
        return {
            "format": "cfa-temporal-consistency/1",
            "units": "mean absolute difference on the 0-255 scale (luma drift signed); chroma drift in CIELAB "
                     "delta E (a*b* plane); flow in pixels; frames are video frames",
            "frames": self.frames, "width": self.width, "height": self.height,
            "flow": {"method": self.flow_method, "computed_on": self.flow_on},
            "occlusion_mask": self.masked,
            "summary": self.summary(),
            "text": self.text(),
            "per_frame": {"result": self.result.as_dict(),
                          "source": self.source.as_dict() if self.source else None,
                          "flow_magnitude": self.flow_magnitude, "trusted_fraction": self.trusted_fraction},
            "window_joins": self.joins,
        }

    def to_json(self) -> str:
        # NaN is not JSON: a frame without any trusted pixel is written as null.
        def clean(value):
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value
        return json.dumps(clean(self.to_dict()))


def _check_clip(frames: np.ndarray, what: str) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what} must be T x H x W x 3 RGB frames, got shape {tuple(frames.shape)}")
    if frames.shape[0] < 2:
        raise ValueError(f"{what} has {frames.shape[0]} frame(s); temporal consistency needs at least 2")


JOIN_MEASURES = ("luma", "chroma", "warp")
JOIN_LABELS = {"luma": "luma", "chroma": "colour", "warp": "warp error"}


def _where(span) -> str:
    start, end = span
    return f"frame {start}" if start == end else f"frames {start}-{end}"


def _join_measures(clip: np.ndarray, warp_error: list) -> dict:
    """The changes compared at window joins: mean luma (0-255), mean colour (a*b* distance), warp error."""
    return {"luma": level_change(frame_luma(clip), lambda a, b: abs(a - b)),
            "chroma": level_change(frame_lab(clip), chroma_distance),
            "warp": pair_mean(warp_error)}


def _colour_curves(clip: np.ndarray) -> tuple[list, list, list]:
    """flicker, drift, frame difference of one clip (cheap: means and one absdiff per frame)."""
    means = clip.reshape(clip.shape[0], -1, 3).mean(axis=1, dtype=np.float64)  # T x 3
    luma = means @ LUMA
    flicker = [None] + [float(abs(luma[t] - luma[t - 1])) for t in range(1, len(clip))]
    drift = [float(np.abs(means[t] - means[0]).mean()) for t in range(len(clip))]
    difference = [None] + [float(np.abs(clip[t].astype(np.int16) - clip[t - 1]).mean())
                           for t in range(1, len(clip))]
    return flicker, drift, difference


def _warp_error(clip: np.ndarray, t: int, backward: np.ndarray, grid: Grid,
                trusted: Optional[np.ndarray]) -> float:
    warped = warp(clip[t - 1].astype(np.float32), backward, grid)
    error = cv2.absdiff(clip[t].astype(np.float32), warped)
    # cv2.mean averages each channel over the masked pixels without copying them out.
    if trusted is None:
        return float(np.mean(cv2.mean(error)[:3]))
    if not trusted.any():
        return math.nan
    return float(np.mean(cv2.mean(error, mask=trusted.view(np.uint8))[:3]))


def measure_consistency(result, source=None, flow: Optional[FlowFunction] = None, mask_occlusions: bool = True,
                        flow_name: Optional[str] = None,
                        on_frame: Optional[Callable[[int, int], None]] = None,
                        window_joins=None, join_note: str = "") -> ConsistencyReport:
    """Score `result` (T x H x W x 3, uint8 or float in [0, 1]) for temporal consistency.

    source: the clip `result` was made from (same count and size); the flow is computed on it (its motion is
    the truth the result should follow) and it is scored the same way, for scale. Without it the flow comes
    from the result itself. flow: a FlowFunction (default: OpenCV DIS, medium preset). mask_occlusions:
    score only pixels that pass the forward-backward check (costs a second flow per frame); off, every pixel
    counts, and samples from outside the frame read as black. on_frame(done, total) is called after each
    frame pair (progress, cancellation: an exception raised there stops the measurement).
    window_joins: where context windows join, in frames of the clip: ints (the first frame of a new window,
    no overlap) or (start, end) spans (joins.JoinSpan; joins.window_joins computes them from window settings);
    join_note says how they were placed (kept in the report).
    """
    result = to_uint8_frames(result)
    _check_clip(result, "the result")
    if source is not None:
        source = to_uint8_frames(source)
        _check_clip(source, "the source")
        if source.shape != result.shape:
            raise ValueError(f"the source has {source.shape[0]} frames of {source.shape[2]}x{source.shape[1]}, "
                             f"the result {result.shape[0]} of {result.shape[2]}x{result.shape[1]}; give both "
                             "the same frame count and size")
    spans = as_spans(window_joins or [], result.shape[0])
    flow = flow if flow is not None else DisFlow()
    flow_name = flow_name or getattr(flow, "name", type(flow).__name__)
    frames, height, width = result.shape[:3]
    grid = Grid(height, width)
    motion = source if source is not None else result

    warp_result, warp_source = [None], [None]
    magnitude, trusted_share = [None], [None]
    for t in range(1, frames):
        backward = np.ascontiguousarray(flow(motion[t], motion[t - 1]), dtype=np.float32)
        if backward.shape != (height, width, 2):
            raise ValueError(f"the flow function returned shape {backward.shape}, expected {(height, width, 2)}")
        trusted = None
        if mask_occlusions:
            forward = np.ascontiguousarray(flow(motion[t - 1], motion[t]), dtype=np.float32)
            trusted = consistent_pixels(backward, forward, grid)
        magnitude.append(float(flow_magnitude(backward).mean()))
        trusted_share.append(1.0 if trusted is None else float(trusted.mean()))
        warp_result.append(_warp_error(result, t, backward, grid, trusted))
        if source is not None:
            warp_source.append(_warp_error(source, t, backward, grid, trusted))
        if on_frame is not None:
            on_frame(t, frames - 1)

    curves = SequenceCurves(warp_result, *_colour_curves(result), *drift_curves(result))
    source_curves = None
    if source is not None:
        source_curves = SequenceCurves(warp_source, *_colour_curves(source), *drift_curves(source))
    joins = None
    if window_joins is not None:  # given, even if empty: the note then says why there is no join
        rows, inside = join_jumps(_join_measures(result, warp_result), frames, spans)
        joins = {"spans": [list(s) for s in spans], "note": join_note, "result": rows, "source": None,
                 "inside_pairs": len(inside_pairs(frames, spans)),
                 "inside_median": {"result": inside, "source": None}}
        if source is not None:
            joins["source"], joins["inside_median"]["source"] = join_jumps(
                _join_measures(source, warp_source), frames, spans)
    return ConsistencyReport(frames=frames, height=height, width=width, flow_method=flow_name,
                             flow_on="source" if source is not None else "result", masked=mask_occlusions,
                             result=curves, source=source_curves, flow_magnitude=magnitude,
                             trusted_fraction=trusted_share, joins=joins)

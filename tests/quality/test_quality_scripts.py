"""The quality scripts' bad input (benchmarks/quality/): missing or unreadable footage stops training before any
minute is spent, naming the file; a missing trained-model file says which one and how to regenerate it."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "footage"))

import cfa_trained_model  # noqa: E402


def load_training_script():
    path = REPO / "benchmarks" / "quality" / "train_small_model.py"
    spec = importlib.util.spec_from_file_location("cfa_train_small_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_clip_is_named(tmp_path):
    pytest.importorskip("cv2")
    train = load_training_script()
    with pytest.raises(train.FootageError, match="footage missing: .*bikes.mp4"):
        train.read_clip(tmp_path / "bikes.mp4")


def test_unreadable_clip_is_named(tmp_path):
    pytest.importorskip("cv2")
    train = load_training_script()
    broken = tmp_path / "bikes.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with pytest.raises(train.FootageError, match="footage unreadable: .*bikes.mp4"):
        train.read_clip(broken)


def test_command_refuses_an_incomplete_footage_folder_before_training(tmp_path):
    (tmp_path / "bikes.mp4").write_bytes(b"x")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "quality" / "train_small_model.py"),
                           "--comfyui", str(tmp_path), "--footage", str(tmp_path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"footage missing: {tmp_path / 'bigbuckbunny.mp4'}" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_missing_fixture_names_the_file_and_the_regeneration(tmp_path):
    with pytest.raises(cfa_trained_model.FixtureMissing) as info:
        cfa_trained_model.read_metadata(tmp_path)
    message = str(info.value)
    assert str(tmp_path / cfa_trained_model.UNET_FILE) in message
    assert "train_small_model.py" in message and "MODEL_CARD.md" in message


def test_fixture_fits_the_size_limit_and_has_a_model_card():
    files = list(cfa_trained_model.FIXTURE_DIR.iterdir())
    assert sum(f.stat().st_size for f in files) <= 16 * 1024 * 1024
    assert (cfa_trained_model.FIXTURE_DIR / "MODEL_CARD.md").is_file()
    meta = cfa_trained_model.read_metadata()
    assert {"latent_shift", "latent_scale", "seed", "command", "device"} <= set(meta)

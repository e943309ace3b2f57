"""Checks that a release tag, pyproject.toml's version and CHANGELOG.md's newest entry name the same version.

The publishing workflow (.github/workflows/publish.yml) runs it before anything reaches the Comfy Registry, which
publishes whatever `version` pyproject.toml holds: a tag pushed without the version bump, or a version without
its changelog entry, stops here with what to fix. tests/packaging/test_release_files.py runs the same checks.

Usage: python scripts/check_release.py [--tag v1.2.3] [--notes-out FILE]
  --notes-out writes the newest entry's text (the registry shows it as the version's changelog).
Standard library only (Python 3.11+ for tomllib).
"""
from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEMVER = re.compile(r"\d+\.\d+\.\d+")
# "## [1.2.3] - 2026-01-31" (the date is optional) or "## [Unreleased]"
HEADING = re.compile(r"^## \[(?P<name>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?\s*$")


def pyproject_version(repo: Path = REPO) -> str:
    with open(repo / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def changelog_entries(text: str) -> list[tuple[str, str]]:
    """The released entries, newest first: (version, text of the entry without its heading)."""
    sections = []  # [name, lines]
    for line in text.splitlines():
        if line.startswith("## "):
            m = HEADING.match(line)
            if m is None:
                raise ValueError(f"CHANGELOG.md: unreadable heading {line!r} (use '## [X.Y.Z] - YYYY-MM-DD')")
            sections.append((m["name"], []))
        elif sections:
            sections[-1][1].append(line)
    return [(name, "\n".join(lines).strip()) for name, lines in sections if name != "Unreleased"]


def release_problems(repo: Path = REPO, tag: str | None = None) -> list[str]:
    """What stops a release of this checkout (and, with `tag`, of that tag); empty when it may go out."""
    problems = []
    version = pyproject_version(repo)
    if not SEMVER.fullmatch(version):
        problems.append(f"pyproject.toml: version {version!r} is not X.Y.Z (the registry wants semantic versions)")
    try:
        entries = changelog_entries((repo / "CHANGELOG.md").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return problems + [str(e)]
    versions = [v for v, _ in entries]
    bad = [v for v in versions if not SEMVER.fullmatch(v)]
    if bad:
        problems.append(f"CHANGELOG.md: entries {bad} are not X.Y.Z")
    elif versions != sorted(versions, key=lambda v: tuple(map(int, v.split("."))), reverse=True) \
            or len(set(versions)) != len(versions):
        problems.append(f"CHANGELOG.md: entries {versions} are not newest first without repeats")
    if not versions:
        problems.append("CHANGELOG.md: no released entry ('## [X.Y.Z] - YYYY-MM-DD')")
    elif versions[0] != version:
        problems.append(f"pyproject.toml says {version} but CHANGELOG.md's newest entry is {versions[0]}: "
                        "bump both together")
    elif not entries[0][1]:
        problems.append(f"CHANGELOG.md: the entry for {version} is empty")
    if tag is not None and tag != f"v{version}":
        problems.append(f"tag {tag!r} does not name pyproject.toml's version {version} (tag it v{version})")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tag", help="the release tag, e.g. v1.2.3")
    ap.add_argument("--notes-out", help="write the newest changelog entry's text to this file")
    ap.add_argument("--repo", default=str(REPO), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    repo = Path(a.repo)
    problems = release_problems(repo, a.tag)
    if problems:
        print("release check failed:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    version, notes = changelog_entries((repo / "CHANGELOG.md").read_text(encoding="utf-8"))[0]
    if a.notes_out:
        Path(a.notes_out).write_text(notes + "\n", encoding="utf-8")
    print(f"release {version}: tag, pyproject.toml and CHANGELOG.md agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())

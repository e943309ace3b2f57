"""The release files around the registry package: the publishing workflow (it runs only on GitHub, so its
structure is checked here), the release check it runs (scripts/check_release.py: tag, pyproject.toml and
CHANGELOG.md name one version), and the icon pyproject.toml points the registry at."""
from __future__ import annotations

import importlib.util
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # our helper module; never the repo root
    sys.path.insert(0, str(HERE))

import cfa_package as pkg  # noqa: E402

REPO = pkg.REPO
WORKFLOW = REPO / ".github" / "workflows" / "publish.yml"
CHECK_SCRIPT = REPO / "scripts" / "check_release.py"
ACTION = "Comfy-Org/publish-node-action"


def _check_release():
    spec = importlib.util.spec_from_file_location("cfa_check_release", CHECK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _workflow() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the workflow (a ComfyUI and comfy-cli requirement)")
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def github_filter_matches(pattern: str, ref: str) -> bool:
    """GitHub's tag/branch filter syntax: * (no slash), ** (anything), + and ? (after a character or class),
    [..] classes; everything else literal."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "[":
            j = pattern.index("]", i)
            out.append(pattern[i:j + 1])
            i = j
        elif c in "+?":
            out.append(c)
        else:
            out.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(out), ref) is not None


def test_workflow_publishes_version_tags_through_the_registry_action():
    wf = _workflow()
    assert set(wf["on"]) == {"push"}, f"publish.yml runs on {sorted(wf['on'])}; only tag pushes should publish"
    push = wf["on"]["push"]
    assert set(push) == {"tags"}, f"publish.yml's push trigger has {sorted(push)}: branch pushes would publish"
    (job,) = wf["jobs"].values()
    steps = job["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert uses[0].startswith("actions/checkout@"), "the first step checks out the tag"
    publish = [i for i, u in enumerate(uses) if u.split("@")[0] == ACTION]
    assert len(publish) == 1, f"publish.yml must publish once through {ACTION}; uses: {uses}"
    assert steps[publish[0]]["with"] == {"personal_access_token": "${{ secrets.REGISTRY_ACCESS_TOKEN }}"}
    runs = " ".join(s.get("run", "") for s in steps[:publish[0]])
    assert 'scripts/check_release.py --tag "$GITHUB_REF_NAME"' in runs, "the release check runs before publishing"
    assert "pytest tests/packaging" in runs, "the package is checked before publishing"
    pin = re.search(r"(?m)^comfy-cli==\S+", (REPO / "tests" / "requirements.txt").read_text())
    assert pin and pin[0] in runs, f"the package check installs the comfy-cli of tests/requirements.txt ({pin})"
    assert CHECK_SCRIPT.is_file()


def test_version_tag_pyproject_and_changelog_agree():
    check = _check_release()
    version = check.pyproject_version()
    tag = f"v{version}"
    assert check.release_problems(REPO, tag) == []
    filters = _workflow()["on"]["push"]["tags"]
    assert any(github_filter_matches(f, tag) for f in filters), f"{tag} does not trigger publish.yml ({filters})"
    for not_a_release in (version, f"v{version}-rc1", "v1.2", "latest"):
        assert not any(github_filter_matches(f, not_a_release) for f in filters), not_a_release


def test_tag_filter_reader():
    assert github_filter_matches("v[0-9]+.[0-9]+.[0-9]+", "v10.2.33")
    assert not github_filter_matches("v[0-9]+.[0-9]+.[0-9]+", "v1x2.3")
    assert github_filter_matches("v*", "v1.2.3") and not github_filter_matches("v*", "x/v1")


@pytest.fixture()
def release_copy(tmp_path):
    for name in ("pyproject.toml", "CHANGELOG.md"):
        shutil.copy2(REPO / name, tmp_path / name)
    return tmp_path


def _set_version(repo: Path, version: str):
    p = repo / "pyproject.toml"
    p.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', p.read_text()))


def test_release_check_names_what_disagrees(release_copy):
    check = _check_release()
    version = check.pyproject_version(release_copy)
    major, minor, _ = map(int, version.split("."))
    bumped = f"{major}.{minor + 1}.0"
    _set_version(release_copy, bumped)  # a version bump without its changelog entry
    (problem,) = check.release_problems(release_copy, f"v{bumped}")
    assert bumped in problem and version in problem and "CHANGELOG.md" in problem
    # the workflow's command line: exit status 1 and the reason on stderr
    done = subprocess.run([sys.executable, str(CHECK_SCRIPT), "--repo", str(release_copy), "--tag", f"v{version}"],
                          capture_output=True, text=True)
    assert done.returncode == 1 and f"'v{version}'" in done.stderr and bumped in done.stderr
    changelog = release_copy / "CHANGELOG.md"
    text = changelog.read_text()
    changelog.write_text(text.replace("## [Unreleased]", f"## [{bumped}] - 2030-01-01", 1))
    assert check.release_problems(release_copy, f"v{bumped}") == []
    changelog.write_text(text.replace("## [Unreleased]", f"## [{bumped}] (soon)", 1))
    (problem,) = check.release_problems(release_copy)
    assert "unreadable heading" in problem and "(soon)" in problem


def test_release_notes_are_the_newest_entry(tmp_path):
    check = _check_release()
    out = tmp_path / "notes.md"
    assert check.main(["--tag", f"v{check.pyproject_version()}", "--notes-out", str(out)]) == 0
    notes = out.read_text()
    newest = check.changelog_entries((REPO / "CHANGELOG.md").read_text())[0][1]
    assert notes.strip() == newest and "## [" not in notes


def test_icon_is_a_small_square_png_in_this_repository():
    """Registry: SVG/PNG/JPG/GIF, at most 800x400 px, at the URL in [tool.comfy] Icon, which must be a raw file
    of the repository named in [project.urls] (scripts/make_icon.py draws it)."""
    rel = pkg.icon_path()
    assert rel, "[tool.comfy] Icon is not https://raw.githubusercontent.com/<owner>/<repo>/<branch>/<path> of " \
                "[project.urls] Repository"
    icon = REPO / rel
    assert icon.is_file() and rel in (pkg.tracked_files() or [rel]), f"{rel} is not a tracked file"
    data = icon.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{rel} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert width == height <= 400, f"{rel} is {width}x{height}: the registry wants a square of at most 400 px"
    assert len(data) < 100_000, f"{rel} is {len(data)} bytes"

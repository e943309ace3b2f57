"""The Comfy Registry package, built by comfy-cli (`comfy node validate` + `comfy node pack`) from this checkout's
tracked files: it holds what a user runs (the code __init__.py imports, docs, every example workflow with its
thumbnail, metadata, licence, changelog, icon) and nothing of the tests, benchmarks, scripts or CI. The checks
are run on doctored packages too, to see them fail naming the file. Loading the installed package in ComfyUI:
tests/comfy/test_registry_package_loads.py."""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # our helper module; never the repo root
    sys.path.insert(0, str(HERE))

import cfa_package as pkg  # noqa: E402


def _need_cli():
    if not pkg.cli_available():
        pytest.skip(pkg.CLI_MISSING)
    if pkg.tracked_files() is None:
        pytest.skip(f"{pkg.REPO} is not a git checkout: comfy-cli packs the files git tracks")


@pytest.fixture(scope="module")
def names():
    _need_cli()
    return pkg.zip_names(pkg.built_package())


@pytest.fixture(scope="module")
def required():
    return pkg.required_contents()


def _doctored_zip(names, path, drop=(), add=()):
    """A zip holding the real package's names minus `drop` plus `add` (contents do not matter to the check)."""
    with zipfile.ZipFile(path, "w") as z:
        for n in [n for n in names if n not in drop] + list(add):
            z.writestr(n, b"")
    return path


def test_package_holds_the_pack_and_nothing_for_development(names, required):
    problems = pkg.package_problems(names, required)
    assert not problems, "the registry package (comfy node pack) is wrong:\n  " + "\n  ".join(problems)


def test_required_contents_reach_every_node_module_and_template(required):
    """The expectation itself: the entry point's imports reach the node modules and the core, and every
    example workflow is required with its thumbnail."""
    if pkg.tracked_files() is None:
        pytest.skip(f"{pkg.REPO} is not a git checkout: the examples required are the tracked ones")
    assert {"nodes/__init__.py", "nodes/schema.py", "attention/errors.py"} <= set(required)
    templates = pkg.expected_templates()
    assert templates, "no example workflows found in example_workflows/"
    for t in templates:
        assert f"example_workflows/{t}.json" in required and f"example_workflows/{t}.jpg" in required
    assert not any(p.startswith(tuple(pkg.DEV_ONLY)) for p in required)


def test_development_files_and_weights_are_named(names, required, tmp_path):
    smuggled = ["tests/fixtures/tiny_lora.safetensors", "tests/unit/test_run.py", "benchmarks/results/x.json",
                "scripts/make_icon.py", ".ci/run", ".github/workflows/publish.yml",
                "consistency/__pycache__/flow.cpython-311.pyc", "nodes/model.safetensors"]
    problems = pkg.package_problems(pkg.zip_names(_doctored_zip(names, tmp_path / "p.zip", add=smuggled)),
                                    required)
    assert sorted(p.split(":")[0] for p in problems) == sorted(smuggled), problems


def test_missing_node_module_or_template_is_named(names, required, tmp_path):
    node_module = sorted(p for p in required if p.startswith("nodes/") and p != "nodes/__init__.py")[0]
    template = sorted(pkg.expected_templates())[0]
    drop = [node_module, f"example_workflows/{template}.json", f"example_workflows/{template}.jpg",
            "CHANGELOG.md", pkg.icon_path()]
    problems = pkg.package_problems(pkg.zip_names(_doctored_zip(names, tmp_path / "p.zip", drop=drop)), required)
    assert sorted(p.split(":")[0] for p in problems) == sorted(drop), problems


def test_new_top_level_code_ships_and_tracked_fixture_weights_do_not(tmp_path):
    """.comfyignore is a list of exclusions: a code folder added at the top level ships without an edit, and
    weights committed under tests/fixtures never do (comfy-cli on a copy with both files tracked)."""
    _need_cli()
    extra = {"cross_frame_new_frontend/__init__.py": b"# a new front end\n",
             "tests/fixtures/trained_lora.safetensors": b"\0" * 64}
    names = pkg.zip_names(pkg.build_package(pkg.REPO, tmp_path, extra=extra, validate=False))
    assert "cross_frame_new_frontend/__init__.py" in names
    assert "tests/fixtures/trained_lora.safetensors" not in names

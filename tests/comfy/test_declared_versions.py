"""The ComfyUI range the pack declares (pyproject [tool.comfy] requires-comfyui, read by the registry and
ComfyUI-Manager) must admit every version the tests run on, and README must list each tested version."""
import os
import re
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]


def running_version() -> str:
    text = (Path(os.environ["COMFYUI_PATH"]) / "comfyui_version.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def test_the_tested_comfyui_is_inside_the_declared_range(comfy):
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]["requires-comfyui"]
    version = running_version()
    assert version in SpecifierSet(declared), f"ComfyUI {version} is tested but outside {declared!r}"
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Supported ComfyUI versions"):readme.index("### Several GPUs")]
    assert re.search(rf"^\| {re.escape(version)} ", table, re.M), f"README does not list ComfyUI {version}"
    assert f'requires-comfyui = "{declared}"' in readme

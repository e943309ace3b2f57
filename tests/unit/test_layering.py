"""Two front ends over one core, read statically from the source (ast; nothing is imported, so no front end's
dependencies are needed and a lazy import inside a function is caught too):

- the core (attention/) imports torch and the standard library only, and relative imports stay inside it;
- the ComfyUI front end (the root __init__.py, which ComfyUI loads, and nodes/) never reaches the diffusers
  front end or diffusers, so loading the node pack never needs diffusers;
- the diffusers front end (diffusers_pipelines/, `cross_frame_diffusers`) never imports ComfyUI and reaches the
  core by its package name.

The one exception is the deprecated old import path attention/diffusers_frontend.py (one release), which may
import the new package and nothing else outside the rule."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}
COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "comfy_config", "folder_paths", "nodes",
                   "node_helpers", "server", "execution", "latent_preview", "comfyui_version"}
DIFFUSERS_SIDE = {"diffusers", "cross_frame_diffusers", "diffusers_pipelines"}
OLD_PATH_SHIM = "diffusers_frontend.py"   # remove from here with the shim (0.2)
DOTTED_MODULE = re.compile(r"[A-Za-z_]\w*(\.\w+)*")


def imports_of(source: str, filename: str, depth: int):
    """(line, module, leaves the folder) for each module `source` imports: `import a.b` gives "a.b",
    `from a import b` gives "a.b", `from ..x import y` gives "..x.y"; importlib.import_module and __import__ with a
    literal name count too. `depth`: how many folders the file sits below the checked folder (0 = directly in
    it); a relative import of level > depth + 1 leaves the folder."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, False) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found += [(node.lineno, base.rstrip(".") + "." + alias.name if node.module else base + alias.name,
                       node.level > depth + 1) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if called in ("import_module", "__import__"):
                name = node.args[0].value
                found.append((node.lineno, name, len(name) - len(name.lstrip(".")) > depth + 1))
    return found


def module_strings(source: str, filename: str):
    """(line, text) of every string constant that is a dotted module name (e.g. a family's (module, class))."""
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(source, filename))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED_MODULE.fullmatch(node.value)]


def top(module: str) -> str:
    """The top-level package of an absolute import ("" for a relative one)."""
    return "" if module.startswith(".") else module.split(".")[0]


def core_violations(source: str, filename: str, depth: int = 0, allowed=frozenset()):
    bad = []
    for line, module, escapes in imports_of(source, filename, depth):
        if escapes:
            bad.append(f"{filename}:{line}: relative import {module} leaves attention/")
        elif module.startswith("."):
            continue
        elif top(module) not in STDLIB | {"torch"} | set(allowed):
            bad.append(f"{filename}:{line}: imports {module} (the core imports torch and the standard library only)")
    return bad


def comfyui_side_violations(source: str, filename: str, depth: int):
    bad = []
    for line, module, _ in imports_of(source, filename, depth):
        parts = set(module.lstrip(".").split("."))
        if top(module) in DIFFUSERS_SIDE or parts & {"diffusers_pipelines", "diffusers_frontend"}:
            bad.append(f"{filename}:{line}: imports {module} (the node pack must load without diffusers)")
    for line, text in module_strings(source, filename):
        if text.split(".")[0] in DIFFUSERS_SIDE:
            bad.append(f"{filename}:{line}: names the module {text!r} (the node pack must load without diffusers)")
    return bad


def diffusers_side_violations(source: str, filename: str, depth: int):
    bad = []
    for line, module, escapes in imports_of(source, filename, depth):
        if escapes:
            bad.append(f"{filename}:{line}: relative import {module} leaves diffusers_pipelines/ "
                       "(reach the core as cross_frame_attention)")
        elif top(module) in COMFYUI_MODULES:
            bad.append(f"{filename}:{line}: imports ComfyUI's {module} (the diffusers front end runs without ComfyUI)")
        elif module.startswith("cross_frame_attention.diffusers_frontend"):
            bad.append(f"{filename}:{line}: imports the deprecated old path {module}")
    return bad


def sources(folder: str):
    root = REPO / folder
    files = sorted(root.rglob("*.py"))
    assert files, f"no Python files under {root}"
    return [(path, len(path.relative_to(root).parts) - 1) for path in files]


def test_core_imports_only_torch_and_the_standard_library():
    bad = []
    for path, depth in sources("attention"):
        allowed = {"cross_frame_diffusers"} if path.relative_to(REPO / "attention").as_posix() == OLD_PATH_SHIM else ()
        bad += core_violations(path.read_text(), str(path.relative_to(REPO)), depth, frozenset(allowed))
    assert not bad, "\n".join(bad)


def test_comfyui_front_end_never_reaches_diffusers():
    bad = comfyui_side_violations((REPO / "__init__.py").read_text(), "__init__.py", 0)
    for path, depth in sources("nodes"):
        bad += comfyui_side_violations(path.read_text(), str(path.relative_to(REPO)), depth + 1)
    assert not bad, "\n".join(bad)


def test_diffusers_front_end_never_imports_comfyui():
    bad = []
    for path, depth in sources("diffusers_pipelines"):
        bad += diffusers_side_violations(path.read_text(), str(path.relative_to(REPO)), depth)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source", [
    "import diffusers",
    "from diffusers.hooks import ModelHook",
    "def later():\n    import comfy.model_management",
    "import importlib\nimportlib.import_module('cross_frame_diffusers.pipeline')",
    "from ..nodes import schema",
    "import numpy as np",
])
def test_the_core_check_catches(source):
    assert core_violations(source, "attention/example.py")


@pytest.mark.parametrize("source", [
    "import torch\nimport torch.nn.functional as F\nfrom dataclasses import dataclass",
    "from __future__ import annotations\nfrom .errors import CrossFrameError",
])
def test_the_core_check_passes(source):
    assert not core_violations(source, "attention/example.py")


@pytest.mark.parametrize("source", [
    "from ..diffusers_pipelines import pipeline",
    "import cross_frame_diffusers",
    "from ...attention.diffusers_frontend import pipeline",
    "from ... import diffusers_pipelines",
    "from cross_frame_attention import diffusers_frontend",
    "FAMILY = ('diffusers.models.attention_processor', 'Attention')",
])
def test_the_comfyui_side_check_catches(source):
    assert comfyui_side_violations(source, "nodes/families/example.py", 1)


@pytest.mark.parametrize("source", [
    "import comfy.ldm.modules.attention",
    "from ..errors import CrossFrameError",
    "from cross_frame_attention.diffusers_frontend import processor",
])
def test_the_diffusers_side_check_catches(source):
    assert diffusers_side_violations(source, "diffusers_pipelines/example.py", 0)

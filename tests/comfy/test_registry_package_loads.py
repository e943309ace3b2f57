"""The registry package installed the way the registry installs it (comfy-cli's zip extracted into
custom_nodes/<node id>) loads in ComfyUI: every node this checkout registers comes from the installed files,
ComfyUI serves every example workflow of the checkout as a template of that folder, thumbnail beside it, and no
test or benchmark file came with it. What else the package holds: tests/packaging/test_registry_package.py."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import sys
from pathlib import Path

import pytest

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"
if str(PACKAGING) not in sys.path:  # the package helpers; never the repo root
    sys.path.insert(0, str(PACKAGING))

import cfa_package as pkg  # noqa: E402


def _source(cls) -> str:
    try:
        return inspect.getfile(cls)
    except TypeError:  # built-in classes have no file
        return ""


@contextlib.contextmanager
def _comfy_registries_restored(comfy_nodes):
    """Load a second copy of the pack and put ComfyUI's node tables back afterwards, so the tests that follow
    in this process keep the checkout's nodes."""
    tables = [comfy_nodes.NODE_CLASS_MAPPINGS, comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS,
              comfy_nodes.LOADED_MODULE_DIRS, comfy_nodes.EXTENSION_WEB_DIRS]
    saved = [dict(t) for t in tables]
    try:
        yield
    finally:
        for table, before in zip(tables, saved):
            table.clear()
            table.update(before)


def _served_templates(custom_nodes: Path) -> dict:
    """ComfyUI's own answer to GET /workflow_templates for a custom_nodes folder (its route handler, called in
    process with that folder as the only custom_nodes path)."""
    import folder_paths
    from aiohttp import web

    # ComfyUI's root first while importing, as when main.py starts: 0.3.64's nodes.py puts comfy/ ahead of it on
    # sys.path, where comfy/utils.py would hide the top-level utils package the route module imports.
    # An earlier test may already have imported comfy/utils.py under the name `utils` (through that same
    # sys.path entry, e.g. while core's extra nodes loaded): set it aside while the route module imports the
    # package, and put it back for whoever holds it.
    root = str(Path(folder_paths.__file__).resolve().parent)
    shadow = sys.modules.get("utils")
    if shadow is not None and not hasattr(shadow, "__path__"):
        del sys.modules["utils"]
    else:
        shadow = None
    sys.path.insert(0, root)
    try:
        from app.custom_node_manager import CustomNodeManager
    finally:
        sys.path.remove(root)
        if shadow is not None:
            sys.modules["utils"] = shadow
    saved = folder_paths.folder_names_and_paths["custom_nodes"]
    folder_paths.folder_names_and_paths["custom_nodes"] = ([str(custom_nodes)], saved[1])
    try:
        routes = web.RouteTableDef()
        CustomNodeManager().add_routes(routes, web.Application(), [])
        handler = next(r.handler for r in routes if getattr(r, "path", None) == "/workflow_templates")
        return json.loads(asyncio.run(handler(None)).text)
    finally:
        folder_paths.folder_names_and_paths["custom_nodes"] = saved


def test_installed_package_loads_every_node_and_template(comfy, tmp_path):
    if not pkg.cli_available():
        pytest.skip(pkg.CLI_MISSING)
    if pkg.tracked_files() is None:
        pytest.skip(f"{pkg.REPO} is not a git checkout: comfy-cli packs the files git tracks")
    repo = pkg.REPO.resolve()
    ours = {nid for nid, cls in comfy.mapping.items() if repo in Path(_source(cls) or "/").resolve().parents}
    assert ours, "the checkout's own nodes are not registered (tests/comfy/conftest.py loads them)"

    package = pkg.built_package()
    folder = pkg.install_like_registry(package, tmp_path / "custom_nodes", pkg.node_id())
    with _comfy_registries_restored(comfy.nodes):
        loaded = asyncio.run(comfy.nodes.load_custom_node(str(folder), module_parent="custom_nodes"))
        registered = {nid: _source(cls) for nid, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items()}
    problems = pkg.package_problems(pkg.zip_names(package), {})  # no test, benchmark or weights file inside
    problems += pkg.loaded_problems(loaded, registered, ours, folder)
    problems += pkg.template_problems(_served_templates(folder.parent), folder, pkg.expected_templates())
    assert not problems, "the installed registry package:\n  " + "\n  ".join(problems)
    # the checkout's nodes are back for the tests that follow
    assert all(repo in Path(_source(comfy.mapping[nid])).resolve().parents for nid in ours)


def test_load_checks_name_a_missing_node_or_template(tmp_path):
    """The two checks on doctored input: a node left out or registered from elsewhere, a template not served
    or without its thumbnail."""
    folder = tmp_path / "custom_nodes" / "pack"
    (folder / "example_workflows").mkdir(parents=True)
    (folder / "example_workflows" / "a.jpg").touch()
    registered = {"CFA_A": str(folder / "nodes" / "a.py"), "CFA_B": "/elsewhere/nodes/b.py"}
    assert pkg.loaded_problems(True, registered, {"CFA_A"}, folder) == []
    problems = pkg.loaded_problems(True, registered, {"CFA_A", "CFA_B", "CFA_C"}, folder)
    assert [p.split(":")[0] for p in problems] == ["CFA_B", "CFA_C"]
    assert "ComfyUI could not load" in pkg.loaded_problems(False, registered, {"CFA_A"}, folder)[0]
    assert pkg.template_problems({"pack": ["a"]}, folder, {"a"}) == []
    problems = pkg.template_problems({"pack": ["a", "b"], "other": ["c"]}, folder, {"a", "b", "c"})
    assert problems == ["example_workflows/c.json: template not served for pack",
                        "example_workflows/b.jpg: thumbnail missing"]

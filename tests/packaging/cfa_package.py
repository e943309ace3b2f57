"""The registry package of this checkout: built with comfy-cli, installed the way the registry installs it, and
checked for what must and must not be in it. Used by tests/packaging (no ComfyUI needed) and by
tests/comfy/test_registry_package_loads.py (the package loaded in ComfyUI).

The checks are functions of a list of file names (or of what ComfyUI registered), so the tests can run them
on doctored input and see them fail, naming the offending file.
"""
from __future__ import annotations

import ast
import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Top-level folders of the checkout that exist to develop the pack: nothing under them may ship (tests/fixtures
# holds trained weights). A new top-level code folder ships without an edit anywhere: .comfyignore excludes.
DEV_ONLY = {
    "tests/": "the test suite and its fixtures",
    "benchmarks/": "GPU benchmarks and their results",
    "scripts/": "maintenance scripts",
    ".ci/": "the CI entry point",
    ".github/": "the publishing workflow",
}
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".gguf")
# What a user of the installed pack needs besides the code its __init__.py imports, the docs and the examples.
REQUIRED_FILES = {
    "__init__.py": "the entry point ComfyUI imports",
    "pyproject.toml": "the registry metadata",
    "requirements.txt": "what the registry installs with the pack",
    "README.md": "the user's first page",
    "LICENSE": "the licence",
    "CHANGELOG.md": "what each version holds",
}
CLI_MISSING = ("comfy-cli is not installed in this environment (tests/requirements.txt pins comfy-cli==1.23.0: "
               "pip install -r tests/requirements.txt); it builds the registry package")


def pyproject(repo: Path = REPO) -> dict:
    with open(repo / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def node_id(repo: Path = REPO) -> str:
    """The registry's id of the pack, and the folder it installs into under custom_nodes/."""
    return pyproject(repo)["project"]["name"]


def icon_path(repo: Path = REPO) -> str | None:
    """The repository path [tool.comfy] Icon points at (a raw.githubusercontent.com URL of this repository),
    or None when the URL is not of that form."""
    icon = pyproject(repo)["tool"]["comfy"].get("Icon", "")
    repository = pyproject(repo)["project"]["urls"]["Repository"].rstrip("/")
    m = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", repository)
    if not m:
        return None
    m = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(m[1])}/{re.escape(m[2])}/[^/]+/(.+)", icon)
    return m[1] if m else None


def tracked_files(repo: Path = REPO) -> list[str] | None:
    """The files git tracks (what comfy-cli packs in a git checkout), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return [p for p in out.stdout.decode().split("\0") if p]


def imported_files(repo: Path = REPO, entry: str = "__init__.py") -> set[str]:
    """Every file of the pack that `entry` reaches through relative imports (at module level or inside
    functions), as repository paths: the code the pack needs inside ComfyUI, found without importing it."""
    seen, todo = set(), [entry]
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        path = repo / rel
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*node.module.split(".")) if node.module else base
            candidates = [target.with_suffix(".py"), target / "__init__.py"]
            candidates += [target / alias.name / "__init__.py" for alias in node.names]
            candidates += [(target / alias.name).with_suffix(".py") for alias in node.names]
            todo += [c.relative_to(repo).as_posix() for c in candidates if c.is_file()]
    return seen


def required_contents(repo: Path = REPO) -> dict[str, str]:
    """Repository path -> why the package must hold it."""
    files = tracked_files(repo) or []
    required = dict(REQUIRED_FILES)
    required.update({p: "code the pack's __init__.py imports" for p in imported_files(repo) if p != "__init__.py"})
    required.update({p: "documentation" for p in files if p.startswith("docs/")})
    for p in files:
        if p.startswith("example_workflows/"):
            name = p[len("example_workflows/"):]
            if name.endswith(".json") and "/" not in name:
                required[p] = "an example workflow (a template in ComfyUI's browser)"
            elif name.endswith(".jpg"):
                required[p] = "the thumbnail of an example workflow"
            else:
                required[p] = "an example workflow's API twin" if name.startswith("api/") else "example files"
    icon = icon_path(repo)
    if icon:
        required[icon] = "the icon pyproject.toml's [tool.comfy] Icon names"
    return required


def package_problems(names, required: dict[str, str]) -> list[str]:
    """What is wrong with a package holding the files `names` (zip member names): development files, weights
    or caches inside it, and `required` files missing; one line each, naming the file."""
    names = [n for n in names if not n.endswith("/")]
    problems = []
    for n in names:
        dev = next((d for d in DEV_ONLY if n.startswith(d)), None)
        if dev:
            problems.append(f"{n}: must not ship ({dev} is {DEV_ONLY[dev]}); .comfyignore must leave it out")
        elif n.endswith(WEIGHT_SUFFIXES):
            problems.append(f"{n}: model weights must not ship; .comfyignore must leave them out")
        elif "__pycache__/" in n or n.endswith((".pyc", ".pyo")):
            problems.append(f"{n}: a Python cache file must not ship")
    have = set(names)
    problems += [f"{p}: missing from the package ({why})" for p, why in sorted(required.items()) if p not in have]
    return problems


def _comfy_cli(args, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    # HOME: comfy-cli keeps its settings under ~/.config; DO_NOT_TRACK and --no-enable-telemetry: nothing is sent
    env = dict(os.environ, HOME=str(home), DO_NOT_TRACK="1", COMFY_NO_TELEMETRY="1")
    return subprocess.run([sys.executable, "-m", "comfy_cli", "--skip-prompt", "--no-enable-telemetry", *args],
                          cwd=str(cwd), env=env, capture_output=True, text=True, timeout=300)


def cli_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("comfy_cli") is not None


def build_package(repo: Path, workdir: Path, extra: dict[str, bytes] | None = None, validate: bool = True) -> Path:
    """`comfy node validate` and `comfy node pack` on a copy of the checkout's git-tracked files (as they are in
    the working tree) in a fresh git repository, so the checkout stays untouched (comfy-cli writes node.zip
    into the folder it packs). `extra`: files (path -> content) added to the copy and tracked there. Returns
    the zip. Raises RuntimeError with comfy-cli's output when it fails."""
    files = tracked_files(repo)
    if files is None:
        raise RuntimeError(f"{repo} is not a git checkout: comfy-cli packs the files git tracks")
    src, home = workdir / "src", workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    for rel in files:
        if (repo / rel).is_file():  # a tracked file deleted in the working tree is not packed
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, src / rel)
    for rel, content in (extra or {}).items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(content)
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run(["git", "-C", str(src), "add", "-A"], check=True)
    for args in (["node", "validate"], ["node", "pack"])[0 if validate else 1:]:
        done = _comfy_cli(args, src, home)
        if done.returncode != 0 or (args[1] == "pack" and not (src / "node.zip").is_file()):
            raise RuntimeError(f"comfy {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return src / "node.zip"


_BUILT: dict[Path, Path] = {}


def built_package(repo: Path = REPO) -> Path:
    """This checkout's package, built once per test process (in a temporary folder removed at exit)."""
    if repo not in _BUILT:
        workdir = Path(tempfile.mkdtemp(prefix="cfa-package-"))
        atexit.register(shutil.rmtree, workdir, True)
        _BUILT[repo] = build_package(repo, workdir)
    return _BUILT[repo]


def zip_names(package: Path) -> list[str]:
    with zipfile.ZipFile(package) as z:
        return z.namelist()


def install_like_registry(package: Path, custom_nodes: Path, folder: str) -> Path:
    """What `comfy node install <id>` does with the registry's zip: extract it into custom_nodes/<id>."""
    target = custom_nodes / folder
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(package) as z:
        z.extractall(target)
    return target


# --- the package inside ComfyUI (tests/comfy/test_registry_package_loads.py) -----------------------------------
def loaded_problems(loaded: bool, registered: dict[str, str], expected: set[str], folder: Path) -> list[str]:
    """After ComfyUI loaded the installed package from `folder`: `registered` maps node id -> the file its class
    was defined in. Every `expected` node must come from a file inside `folder`."""
    if not loaded:
        return [f"ComfyUI could not load {folder} (its log above says why)"]
    folder = Path(folder).resolve()
    problems = []
    for nid in sorted(expected):
        where = registered.get(nid)
        if where is None:
            problems.append(f"{nid}: not registered by the installed package")
        elif folder not in Path(where).resolve().parents:
            problems.append(f"{nid}: registered from {where}, not from the installed package in {folder}")
    return problems


def template_problems(served: dict[str, list[str]], folder: Path, expected: set[str]) -> list[str]:
    """`served`: ComfyUI's /workflow_templates answer (custom node folder -> template names). Every `expected`
    template must be served for the installed folder and have its thumbnail beside it."""
    folder = Path(folder)
    names = set(served.get(folder.name, []))
    problems = [f"example_workflows/{t}.json: template not served for {folder.name}" for t in sorted(expected - names)]
    problems += [f"example_workflows/{t}.jpg: thumbnail missing" for t in sorted(expected & names)
                 if not (folder / "example_workflows" / f"{t}.jpg").is_file()]
    return problems


def expected_templates(repo: Path = REPO) -> set[str]:
    return {Path(p).stem for p in tracked_files(repo) or []
            if p.startswith("example_workflows/") and p.count("/") == 1 and p.endswith(".json")}

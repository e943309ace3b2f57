"""The composition matrix: every core node that takes a MODEL and gives a MODEL (enumerated from the running
ComfyUI's node list, so new core nodes join by themselves), in both places beside the pack:

  before: other node -> Batch Video Sampler
  after:  Store Reference Attention / Cross-Frame Attention Patch -> other node -> KSampler

Each cell either holds the method's invariants, with "plain" meaning the other node + plain KSampler:
  frame0    frame 0 of the clip = the other node + plain sampling of frame 0 alone
  identical a clip of identical frames (same noise) = the other node + plain sampling of that clip
  windows   windows of 2 frames = the whole clip (before only; KSampler has no windows)
  acts      frames 1.. differ from the other node + plain sampling (cross-frame attention did something)
  same      after: the Store reference + the patched frames = the whole clip of `before`
or stops with a clear error (a CrossFrameError naming the other node) when sampling starts. Nodes that couple
frames themselves, or whose inputs cannot be made here, are listed in EXPECTED with the reason.

CFA_WRITE_COMPATIBILITY=1 rewrites this ComfyUI version's table in docs/compatibility.md from the results;
test_docs_table_is_the_matrix checks that the docs say what the matrix found.
"""
from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import pytest
import torch

from core_node_files import register
from graph_helpers import ksampler, latent_from_batch, patch, rel_diff, run_node, store, video_sampler
from tiny_weights import init_weights

TOL = 1e-4
ACTS = 1e-3
STEPS = dict(steps=2)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"

# Widget values other than the defaults, where the defaults do nothing on the tiny 16 x 16 latent, or draw at
# random per model call (HyperTile's swap_size > 1 picks a new tiling each call: no two runs would compare).
OVERRIDES = {
    "HyperTile": dict(tile_size=32, swap_size=1),
    "PatchModelAddDownscale": dict(block_number=1, downscale_factor=2.0),
}
# Cells that differ from "works", and why. (node, place) -> (status, why); place None = both.
COUPLES = "couples frames itself"
EXPECTED = {
    ("EasyCache", None): (COUPLES, "skips steps by the change of the whole batch (when it skips, frame 0 depends on "
                                   "the other frames); windows refused: one cache per conditioning"),
    ("LazyCache", None): (COUPLES, "skips steps by the change of the whole batch, so frame 0 depends on the other "
                                   "frames"),
    ("Mahiro", None): (COUPLES, "weights guidance by one similarity averaged over the whole batch, so frame 0 "
                                "depends on the other frames"),
    ("VideoLinearCFGGuidance", "after"): (COUPLES, "gives each frame a cfg by its position in the sampled batch: the "
                                                   "reference and the frames sampled apart get another ramp than "
                                                   "the whole clip"),
    ("VideoTriangleCFGGuidance", "after"): (COUPLES, "gives each frame a cfg by its position in the sampled batch: "
                                                     "the reference and the frames sampled apart get another ramp "
                                                     "than the whole clip"),
    ("TomePatchModel", None): ("random", "merges query tokens chosen at random on every model call (ComfyUI's "
                                         "global random generator), so no two runs compare; it leaves keys and "
                                         "values whole, which cross-frame attention extends"),
    ("ContextWindowsManual", "before"): ("own windows", "its context windows replace frames_per_batch (leave it "
                                                        "at 0); schedules batched or standard_static, dim 0"),
    ("TorchCompileModel", None): ("slow", "compiles the model (tens of seconds on a CPU); checked in "
                                          "test_core_patches.py: compiled = uncompiled in both places"),
}
SLOW_NODES = {"TorchCompileModel"}


# --- the node list --------------------------------------------------------------------------------------------
def _spec(value):
    kind, options = (value[0], value[1] if len(value) > 1 else {}) if isinstance(value, tuple) else (value, {})
    return kind, options or {}


def model_nodes(comfy) -> dict:
    """{node id: class} of ComfyUI's own nodes (nodes.py and comfy_extras) with a MODEL input and output."""
    mapping = comfy.nodes.NODE_CLASS_MAPPINGS
    if "HyperTile" not in mapping:
        result = comfy.nodes.init_builtin_extra_nodes()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    found = {}
    for node_id, cls in mapping.items():
        module = cls.__module__.replace("\\", "/")
        if not (module == "nodes" or "comfy_extras" in module):
            continue
        try:
            inputs = cls.INPUT_TYPES()
            outputs = tuple(str(t) for t in cls.RETURN_TYPES)
        except Exception:   # a node whose schema cannot be read here is not one a user can wire either
            continue
        kinds = [str(_spec(v)[0]) for v in {**inputs.get("required", {})}.values()]
        if "MODEL" in kinds and "MODEL" in outputs:
            found[node_id] = cls
    return dict(sorted(found.items()))


def display_name(comfy, node_id: str) -> str:
    return comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_id) or node_id


def node_inputs(cls, node_id: str, model, second_model, conds, files) -> dict:
    """Values for every required input (widget defaults unless overridden); raises LookupError naming the
    input types this test cannot make."""
    values, missing = {}, []
    overrides = OVERRIDES.get(node_id, {})
    first_model = True
    for name, value in cls.INPUT_TYPES().get("required", {}).items():
        kind, options = _spec(value)
        kind_name = kind if isinstance(kind, (list, tuple)) else str(kind)
        if name in overrides:
            values[name] = overrides[name]
        elif name in files:
            values[name] = files[name]
        elif kind_name == "MODEL":
            values[name] = model if first_model else second_model
            first_model = False
        elif kind_name == "CONDITIONING":
            values[name] = conds[1]
        elif kind_name == "CLIP":
            values[name] = None   # LoRA loaders patch the text encoder only when given one: the MODEL is tested
        elif isinstance(kind, (list, tuple)):
            values[name] = options.get("default", kind[0] if kind else None)
        elif kind_name == "COMBO":
            choices = options.get("options") or []
            values[name] = options.get("default", choices[0] if choices else None)
        elif kind_name in ("INT", "FLOAT", "BOOLEAN", "STRING"):
            values[name] = options.get("default", options.get("min", {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False,
                                                                      "STRING": ""}[kind_name]))
        else:
            missing.append(kind_name)
    if missing:
        kinds = sorted(set(missing))
        listed = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
        raise LookupError(f"needs {listed} input{'s' if len(kinds) > 1 else ''} (not made by this test)")
    return values


def apply(comfy, node_id, cls, model, ctx) -> object:
    values = node_inputs(cls, node_id, model, ctx["second"], ctx["conds"], ctx["files"])
    outputs = run_node(cls, **values)
    return outputs[[str(t) for t in cls.RETURN_TYPES].index("MODEL")]


# --- one cell -------------------------------------------------------------------------------------------------
def _first_line(error: Exception) -> str:
    """The error's first sentence, without the node name it starts with."""
    text = str(error)
    head, sep, rest = text.partition(": ")
    if sep and len(head) < 40:
        text = rest
    return text.split(". ")[0]


def run_cell(comfy, node_id, cls, ctx) -> dict:
    """Both places for one node: {"before": {...}, "after": {...}} each with a status, the invariants that
    held or failed, and the error when one stopped sampling."""
    conds, clip, model = ctx["conds"], ctx["clip"], ctx["model"]
    frame0 = latent_from_batch(comfy, clip, 0, 1)
    same_clip = {"samples": clip["samples"][:1].repeat(clip["samples"].shape[0], 1, 1, 1),
                 "batch_index": [0] * clip["samples"].shape[0]}
    try:
        other = apply(comfy, node_id, cls, model, ctx)
    except LookupError as error:
        return {p: {"status": "not run", "why": str(error)} for p in ("before", "after")}
    except Exception as error:
        if any(str(_spec(v)[0]) == "CLIP" for v in cls.INPUT_TYPES().get("required", {}).values()):
            return {p: {"status": "not run", "why": "needs a CLIP input (not made by this test)"}
                    for p in ("before", "after")}
        why = f"the node itself fails on an SD U-Net: {type(error).__name__}: {_first_line(error)}"
        return {p: {"status": "not for this model", "why": why} for p in ("before", "after")}
    try:   # the other node alone, plain sampling: the reference of every invariant
        plain0 = ksampler(comfy, other, conds, frame0, **STEPS)
        plain = ksampler(comfy, other, conds, clip, **STEPS)
        plain_same = ksampler(comfy, other, conds, same_clip, **STEPS)
    except Exception as error:
        why = f"the node itself fails on an SD U-Net (plain KSampler): {type(error).__name__}: {_first_line(error)}"
        return {p: {"status": "not for this model", "why": why} for p in ("before", "after")}

    cells = {}
    checks, error = {}, None
    whole = None
    try:
        whole, _ = video_sampler(comfy, other, conds, clip, **STEPS)
        checks["frame0"] = rel_diff(whole["samples"][:1], plain0) <= TOL
        checks["acts"] = rel_diff(whole["samples"][1:], plain["samples"][1:]) > ACTS
        checks["identical"] = rel_diff(video_sampler(comfy, other, conds, same_clip, **STEPS)[0], plain_same) <= TOL
    except Exception as e:   # judged in _verdict: a CrossFrameError is a refusal, anything else a failure
        error = e
    windows_error = None
    if error is None:
        try:
            checks["windows"] = rel_diff(video_sampler(comfy, other, conds, clip, frames_per_batch=2, **STEPS)[0],
                                         whole) <= TOL
        except Exception as e:   # judged in _verdict: a CrossFrameError is a refusal, anything else a failure
            windows_error = e
    cells["before"] = _verdict(checks, error, windows_error)

    checks, error = {}, None
    try:
        store_model, state = store(comfy, model)
        reference = ksampler(comfy, apply(comfy, node_id, cls, store_model, ctx), conds, frame0, **STEPS)
        checks["frame0"] = rel_diff(reference, plain0) <= TOL
        rest = ksampler(comfy, apply(comfy, node_id, cls, patch(comfy, model, state, reference), ctx), conds,
                        latent_from_batch(comfy, clip, 1, clip["samples"].shape[0] - 1), **STEPS)
        joined = torch.cat([reference["samples"], rest["samples"]])
        checks["acts"] = rel_diff(joined[1:], plain["samples"][1:]) > ACTS
        if whole is not None:
            checks["same"] = rel_diff(joined, whole) <= TOL
    except Exception as e:   # judged in _verdict: a CrossFrameError is a refusal, anything else a failure
        error = e
    cells["after"] = _verdict(checks, error, None)
    return cells


def _clear(error) -> bool:
    return type(error).__name__ == "CrossFrameError"


def _verdict(checks: dict, error, windows_error) -> dict:
    failed = sorted(k for k, ok in checks.items() if not ok)
    for e in (error, windows_error):
        if e is not None and not _clear(e):
            return {"status": "raw error", "error": f"{type(e).__name__}: {e}"}
    if error is not None:
        return {"status": "refuses", "why": _first_line(error), "error": str(error)}
    if failed:
        return {"status": "invariants fail", "failed": failed}
    if windows_error is not None:
        return {"status": "whole clip only", "why": _first_line(windows_error), "error": str(windows_error)}
    return {"status": "works"}


# --- the matrix -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def matrix(comfy, tiny_model, conds, clip_latent, tmp_path_factory):
    second = _second_model(comfy, tiny_model)
    files = register(tmp_path_factory.mktemp("matrix_files"), tiny_model.model.diffusion_model)
    ctx = dict(model=tiny_model, second=second, conds=conds, files=files,
               clip=latent_from_batch(comfy, clip_latent, 0, 3))
    nodes = model_nodes(comfy)
    cells, started = {}, time.perf_counter()
    for node_id, cls in nodes.items():
        if node_id in SLOW_NODES:
            status, why = EXPECTED[(node_id, None)]
            cells[node_id] = {p: {"status": status, "why": why} for p in ("before", "after")}
            continue
        cells[node_id] = run_cell(comfy, node_id, cls, ctx)
    seconds = time.perf_counter() - started
    print(f"\ncomposition matrix: {len(nodes)} core MODEL nodes in {seconds:.1f} s")
    return dict(cells=cells, nodes=nodes, seconds=seconds)


def _second_model(comfy, tiny_model):
    """Another tiny U-Net of the same shape (other weights), for the merge nodes' second MODEL."""
    cpu = torch.device("cpu")
    inner = comfy.model_base.BaseModel(tiny_model.model.model_config, device=cpu)
    init_weights(inner.diffusion_model, torch.Generator().manual_seed(4321))
    with torch.no_grad():   # norms unlike the first model's: ModelMergeSubtract would cancel equal ones to zero
        for name, p in inner.diffusion_model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):
                p.fill_(0.5)
    inner.eval()
    return comfy.model_patcher.ModelPatcher(inner, load_device=cpu, offload_device=cpu)


def expected(node_id: str, place: str):
    return EXPECTED.get((node_id, place)) or EXPECTED.get((node_id, None))


def test_every_cell_holds_the_invariants_or_refuses(comfy, matrix):
    problems = []
    for node_id, places in matrix["cells"].items():
        name = display_name(comfy, node_id)
        for place, cell in places.items():
            known = expected(node_id, place)
            status = cell["status"]
            if known is not None:
                if status == "raw error" or (known[0] != "slow" and status == "not run"):
                    problems.append(f"{node_id} ({place}): listed as '{known[0]}', got {cell}")
                continue
            if status in ("works", "not run", "not for this model"):
                continue
            if status in ("refuses", "whole clip only"):
                said = cell["error"].lower()
                if name.lower().replace(" (manual)", "") not in said and node_id.lower() not in said:
                    problems.append(f"{node_id} ({place}): the error does not name {name}: {cell['error']}")
                continue
            problems.append(f"{node_id} ({place}): {cell}")
    assert not problems, "\n".join(problems)


def test_the_matrix_covers_the_nodes_that_matter(comfy, matrix):
    """The enumeration finds the nodes of issue 25, and the ones that act on an SD U-Net do run."""
    cells = matrix["cells"]
    for node_id in ("HyperTile", "SelfAttentionGuidance", "HypernetworkLoader", "LoraLoaderModelOnly",
                    "PerturbedAttentionGuidance", "FreeU_V2", "EasyCache", "TorchCompileModel"):
        assert node_id in cells, node_id
    for node_id in ("HyperTile", "HypernetworkLoader", "LoraLoader", "LoraLoaderModelOnly", "FreeU_V2"):
        assert cells[node_id]["before"]["status"] == "works", (node_id, cells[node_id])
        assert cells[node_id]["after"]["status"] == "works", (node_id, cells[node_id])
    assert cells["SelfAttentionGuidance"]["before"]["status"] == "whole clip only"


# --- the docs table -------------------------------------------------------------------------------------------
def _version() -> str:
    import comfyui_version
    return str(comfyui_version.__version__)


WORDS = {"works": "works", "whole clip only": "whole clip only (windows refused)", "refuses": "refuses",
         "not run": "not tested", "not for this model": "n/a on SD U-Nets", COUPLES: "couples frames",
         "slow": "works (separate test)", "invariants fail": "DIFFERS", "random": "runs (random per call)",
         "own windows": "works (its own windows)"}


def table(comfy, matrix) -> str:
    rows = ["| node | before Batch Video Sampler | after Cross-Frame Attention Patch | why |", "|---|---|---|---|"]
    for node_id, places in matrix["cells"].items():
        words, whys = [], []
        for place in ("before", "after"):
            cell = places[place]
            known = expected(node_id, place)
            status = known[0] if known else cell["status"]
            words.append(WORDS.get(status, status))
            why = known[1] if known else cell.get("why", "")
            if why and why not in whys:
                whys.append(why)
        name = display_name(comfy, node_id)
        label = name if name == node_id else f"{name} (`{node_id}`)"
        rows.append(f"| {label} | {words[0]} | {words[1]} | {'; '.join(whys).replace('|', '/')} |")
    return "\n".join(rows)


def _section(version: str) -> re.Pattern:
    mark = re.escape(version)
    return re.compile(rf"(<!-- matrix {mark} start -->\n)(.*?)(\n<!-- matrix {mark} end -->)", re.S)


def test_docs_table_is_the_matrix(comfy, matrix):
    version, generated = _version(), table(comfy, matrix)
    text = DOCS.read_text() if DOCS.exists() else ""
    pattern = _section(version)
    if os.environ.get("CFA_WRITE_COMPATIBILITY"):
        block = f"<!-- matrix {version} start -->\n{generated}\n<!-- matrix {version} end -->"
        text = pattern.sub(lambda m: block, text) if pattern.search(text) else text.rstrip("\n") + \
            f"\n\n### ComfyUI {version}\n\n{block}\n"
        DOCS.write_text(text)
    found = pattern.search(text)
    assert found, f"docs/compatibility.md has no table for ComfyUI {version}: run this test with " \
                  "CFA_WRITE_COMPATIBILITY=1"
    assert found.group(2) == generated, "docs/compatibility.md differs from the matrix: rerun this test with " \
                                        "CFA_WRITE_COMPATIBILITY=1 and review the change"

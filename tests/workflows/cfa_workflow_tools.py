"""Read, check and convert ComfyUI workflow files (UI format v0.4 and API format).

Standard library only. Used by:
- tests/workflows/test_workflow_sync.py  (offline: UI graph vs its API twin, no ComfyUI needed)
- tests/server/test_workflow_structure.py (live: against a running server's /object_info)
- tests/workflows/build_examples.py       (writes the examples)

Frontend rules this module encodes (ComfyUI frontend 1.2x, checked by loading and re-serialising
workflows in the browser test): a node's ``inputs`` lists its socket inputs first (required, then
optional, in the schema's order), then one entry per widget with ``"widget": {"name": ...}``;
``widgets_values`` holds one value per widget in the schema's order, plus the control value
("fixed", "randomize"...) right after an input declaring ``control_after_generate``, plus "image" for
the upload button right after a combo declaring ``image_upload``/``video_upload``/...
Newer ComfyUI (0.30.0, frontend 1.47) adds: a DynamicCombo widget (type ``COMFY_DYNAMICCOMBO_V3``: one
value, the selected option's key, followed by the widgets of that option, which these tools do not
support: the examples only select options without inputs) and optional widgets on core nodes that the
examples, written in the baseline layout, do not list (``ADDED_WIDGETS``).
"""
from __future__ import annotations

import json
from pathlib import Path

CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
UI_ONLY_TYPES = {"Note", "MarkdownNote"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO}

# The example workflows are written in the widget layout of the oldest supported ComfyUI.
BASELINE_COMFYUI = "0.3.64"
# Widget inputs that later ComfyUI versions added to core nodes the examples use (optional unless ADDED_REQUIRED names
# them): (first version known to have it, node type, input, default). An example file (baseline layout) does not list
# them; a newer frontend appends the widget with its default when it loads the file, and for an optional one the
# server uses the same default when an API prompt leaves it out. The live tests check this table against the running
# server's /object_info both ways (every entry exists there with that default, and nothing else is missing from the
# examples).
ADDED_WIDGETS = [
    ("0.30.0", "CreateVideo", "bit_depth", 8),
    ("0.30.0", "WanContextWindowsManual", "freenoise", True),
    ("0.30.0", "WanContextWindowsManual", "retain_first_frame", False),
    ("0.30.0", "WanContextWindowsManual", "split_conds_to_windows", False),
]
# The entries of ADDED_WIDGETS that the later version added as REQUIRED inputs. The frontend still fills them
# with their defaults when it opens an example (they follow the baseline's widgets), but the server fills in
# nothing for a required input an API prompt leaves out, so the API twins carry them with their defaults for
# every version (required_additions): the later server needs them, an older one ignores inputs its schema
# does not name.
ADDED_REQUIRED = {
    ("WanContextWindowsManual", "freenoise"),
    ("WanContextWindowsManual", "retain_first_frame"),
    ("WanContextWindowsManual", "split_conds_to_windows"),
}


def required_additions(node_type):
    """{input: default} of the ADDED_REQUIRED inputs of `node_type`, as the API twins carry them."""
    return {name: default for _, t, name, default in ADDED_WIDGETS
            if t == node_type and (t, name) in ADDED_REQUIRED}


REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "example_workflows"
API_DIR = EXAMPLES_DIR / "api"


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def example_names():
    """Base names of the UI workflows (the ones ComfyUI lists as templates)."""
    return sorted(p.stem for p in EXAMPLES_DIR.glob("*.json"))


def api_names():
    return sorted(p.stem for p in API_DIR.glob("*.json"))


# --- ComfyUI versions ------------------------------------------------------------------------------------

def version_tuple(version):
    """'0.30.0' -> (0, 30, 0); None or unparsable -> None."""
    try:
        return tuple(int(p) for p in str(version).split("+")[0].split("-")[0].split("."))
    except (TypeError, ValueError):
        return None


def added_widgets(comfy_version):
    """{(node type, input): default} of ADDED_WIDGETS that a ComfyUI of this version has.

    None (version unknown: offline checks) and the baseline give {}."""
    v = version_tuple(comfy_version)
    if v is None:
        return {}
    return {(t, name): default for since, t, name, default in ADDED_WIDGETS if v >= version_tuple(since)}


def skipped_for(node_type, comfy_version):
    """Input names of this node type that the baseline layout leaves out on this ComfyUI version."""
    return {name for (t, name) in added_widgets(comfy_version) if t == node_type}


# --- schema helpers (object_info) --------------------------------------------------------------------

def ordered_inputs(node_def, skip=()):
    """[(name, spec, optional)] in the schema's order (required, then optional), without ``skip``."""
    spec_all = node_def.get("input", {})
    order = node_def.get("input_order") or {k: list(v) for k, v in spec_all.items()}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = spec_all.get(section, {}).get(name)
            if spec is not None and name not in skip:
                out.append((name, spec, section == "optional"))
    return out


def spec_type(spec):
    t = spec[0]
    return "COMBO" if isinstance(t, list) else t


def spec_opts(spec):
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec):
    if isinstance(spec[0], list):
        return spec[0]
    options = spec_opts(spec).get("options")
    if spec[0] == DYNAMIC_COMBO and options is not None:
        return [o.get("key") for o in options]
    return options


def dynamic_option_inputs(spec, key):
    """Names of the inputs that selecting option ``key`` of a DynamicCombo adds (none for other specs)."""
    if spec_type(spec) != DYNAMIC_COMBO:
        return []
    for o in spec_opts(spec).get("options") or []:
        if o.get("key") == key:
            sections = o.get("inputs") or {}
            return [n for sec in ("required", "optional") for n in (sections.get(sec) or {})]
    return []


def is_widget(spec):
    return spec_type(spec) in WIDGET_TYPES and not spec_opts(spec).get("forceInput")


def upload_flag(spec):
    opts = spec_opts(spec)
    return any(k.endswith("_upload") and v for k, v in opts.items())


def widget_slots(node_def, skip=()):
    """The node's widgets_values layout: [(input name, kind)] with kind value | control | upload."""
    slots = []
    for name, spec, _ in ordered_inputs(node_def, skip):
        if not is_widget(spec):
            continue
        slots.append((name, "value"))
        if spec_opts(spec).get("control_after_generate"):
            slots.append((name, "control"))
        if upload_flag(spec):
            slots.append((name, "upload"))
    return slots


def socket_inputs(node_def):
    return [(n, s, opt) for n, s, opt in ordered_inputs(node_def) if not is_widget(s)]


def added_widget_problems(object_info, comfy_version, node_types):
    """ADDED_WIDGETS against a live schema: each entry applying to this version is a widget with that
    default, required exactly when ADDED_REQUIRED names it, else optional; each entry for a later version is
    absent (only for node types in use)."""
    p = []
    live = added_widgets(comfy_version)
    for since, t, name, default in ADDED_WIDGETS:
        node_def = object_info.get(t)
        if t not in node_types or node_def is None:
            continue
        spec = {n: (s, o) for n, s, o in ordered_inputs(node_def)}.get(name)
        if (t, name) in live:
            if spec is None:
                p.append(f"ComfyUI {comfy_version}: {t} has no input {name}, which ADDED_WIDGETS says it "
                         f"has since {since}")
            elif (spec[1] == ((t, name) in ADDED_REQUIRED) or not is_widget(spec[0])
                  or spec_opts(spec[0]).get("default") != default):
                kind = "a required" if (t, name) in ADDED_REQUIRED else "an optional"
                p.append(f"ComfyUI {comfy_version}: {t}.{name} is {spec[0]} (optional={spec[1]}); ADDED_WIDGETS "
                         f"expects {kind} widget with default {default!r}")
        elif spec is not None:
            p.append(f"ComfyUI {comfy_version}: {t} already has {name}, which ADDED_WIDGETS dates from {since}")
    return p


def values_as_loaded(node, node_def, comfy_version):
    """widgets_values a frontend shows for a baseline-layout node on this ComfyUI version: the file's
    values by name, plus the ADDED_WIDGETS defaults in their schema position."""
    added = {name: d for (t, name), d in added_widgets(comfy_version).items() if t == node["type"]}
    file_slots = widget_slots(node_def, skip=set(added))
    values = list(node.get("widgets_values") or [])
    by_slot = dict(zip(file_slots, values))
    out = []
    for slot in widget_slots(node_def):
        name, kind = slot
        out.append(added[name] if name in added and kind == "value" else by_slot.get(slot))
    return out


# --- UI graph helpers ----------------------------------------------------------------------------------

def ui_links(ui):
    """{link id: (origin id, origin slot, target id, target slot, type)}"""
    out = {}
    for link in ui.get("links", []):
        if isinstance(link, dict):
            out[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                               link.get("type"))
        else:
            out[link[0]] = tuple(link[1:6])
    return out


def ui_nodes(ui, include_ui_only=False):
    return {n["id"]: n for n in ui.get("nodes", [])
            if include_ui_only or n.get("type") not in UI_ONLY_TYPES}


def ui_to_api(ui, object_info, comfy_version=None):
    """Convert a UI workflow to an API prompt using the live schema. Returns (api dict, problems).

    With ``comfy_version`` the file is read in the baseline layout (ADDED_WIDGETS left out): the result
    is the API prompt as written for the baseline plus the ADDED_REQUIRED inputs with their defaults (the
    API twin), which every supported version runs."""
    problems, api = [], {}
    links = ui_links(ui)
    nodes = ui_nodes(ui, include_ui_only=True)
    for nid, node in nodes.items():
        t = node.get("type")
        if t in UI_ONLY_TYPES:
            continue
        if node.get("mode", 0) not in (0,):
            problems.append(f"node {nid} ({t}) is muted or bypassed (mode {node.get('mode')})")
            continue
        node_def = object_info.get(t)
        if node_def is None:
            problems.append(f"node {nid}: type {t} is not known to the server")
            continue
        by_name = {i["name"]: i for i in node.get("inputs", [])}
        values = list(node.get("widgets_values") or [])
        skip = skipped_for(t, comfy_version)
        slots = widget_slots(node_def, skip)
        if len(values) != len(slots):
            problems.append(f"node {nid} ({t}): {len(values)} widget values, the schema needs {len(slots)} "
                            f"({[f'{n}:{k}' for n, k in slots]})")
        widget_value = {}
        for (name, kind), value in zip(slots, values):
            if kind == "value":
                widget_value[name] = value
            elif kind == "control" and value not in CONTROL_VALUES:
                problems.append(f"node {nid} ({t}): control_after_generate value for {name} is {value!r}")
        inputs = {}
        for name, spec, optional in ordered_inputs(node_def, skip):
            entry = by_name.get(name)
            link_id = entry.get("link") if entry else None
            if link_id is not None:
                if link_id not in links:
                    problems.append(f"node {nid} ({t}): input {name} uses missing link {link_id}")
                    continue
                origin, slot = links[link_id][0], links[link_id][1]
                inputs[name] = [str(origin), slot]
            elif is_widget(spec):
                if name in widget_value:
                    inputs[name] = widget_value[name]
                    nested = dynamic_option_inputs(spec, widget_value[name])
                    if nested:
                        problems.append(f"node {nid} ({t}): {name}={widget_value[name]!r} selects a DynamicCombo "
                                        f"option with inputs {nested}, which these tools do not support")
            elif not optional:
                problems.append(f"node {nid} ({t}): required input {name} is not connected")
        if comfy_version is not None:
            inputs.update(required_additions(t))
        api[str(nid)] = {"inputs": inputs, "class_type": t}
    return api, problems


def structure_problems(ui, object_info, name="workflow", comfy_version=None):
    """Everything that would make the frontend or the server reject or mis-load a UI workflow.

    With ``comfy_version`` (the live server's), the file must have the baseline layout of that server's
    schemas: exactly its widgets minus the ADDED_WIDGETS of that version."""
    p = []
    if ui.get("version") != 0.4:
        p.append(f"{name}: version is {ui.get('version')!r}, expected 0.4")
    all_nodes = ui.get("nodes", [])
    ids = [n.get("id") for n in all_nodes]
    if len(ids) != len(set(ids)):
        p.append(f"{name}: duplicate node ids")
    if ids and ui.get("last_node_id", -1) < max(ids):
        p.append(f"{name}: last_node_id {ui.get('last_node_id')} < highest node id {max(ids)}")
    nodes = {n["id"]: n for n in all_nodes}
    links = ui_links(ui)
    if links and ui.get("last_link_id", -1) < max(links):
        p.append(f"{name}: last_link_id {ui.get('last_link_id')} < highest link id {max(links)}")
    for lid, (src, sslot, dst, dslot, ltype) in links.items():
        if src not in nodes or dst not in nodes:
            p.append(f"{name}: link {lid} joins missing node(s) {src}->{dst}")
            continue
        outs, ins = nodes[src].get("outputs", []), nodes[dst].get("inputs", [])
        if not 0 <= sslot < len(outs):
            p.append(f"{name}: link {lid} leaves node {src} from missing output slot {sslot}")
            continue
        if not 0 <= dslot < len(ins):
            p.append(f"{name}: link {lid} enters node {dst} at missing input slot {dslot}")
            continue
        if lid not in (outs[sslot].get("links") or []):
            p.append(f"{name}: output {sslot} of node {src} does not list link {lid}")
        if ins[dslot].get("link") != lid:
            p.append(f"{name}: input {dslot} of node {dst} does not point back to link {lid}")
        st, dt = outs[sslot].get("type"), ins[dslot].get("type")
        if ltype != st or (dt not in ("*", st) and not (dt in WIDGET_TYPES and st in WIDGET_TYPES | {"*"})):
            p.append(f"{name}: link {lid} type {ltype}: output {st} -> input {dt}")
        # schema-level type check: the server is the judge of what a socket accepts
        sdef, ddef = object_info.get(nodes[src].get("type")), object_info.get(nodes[dst].get("type"))
        if sdef and ddef:
            out_types = sdef.get("output", [])
            in_spec = dict((n, s) for n, s, _ in ordered_inputs(ddef)).get(ins[dslot].get("name"))
            if sslot >= len(out_types):
                p.append(f"{name}: node {src} ({nodes[src]['type']}) has no output {sslot} in the schema")
            elif in_spec is None:
                p.append(f"{name}: node {dst} ({nodes[dst]['type']}) has no input {ins[dslot].get('name')}")
            else:
                want = spec_type(in_spec)
                if want not in ("*", out_types[sslot]) and not (want == "COMBO" and out_types[sslot] == "COMBO"):
                    p.append(f"{name}: link {lid}: {nodes[src]['type']} output {out_types[sslot]} into "
                             f"{nodes[dst]['type']}.{ins[dslot].get('name')} ({want})")
    for nid, node in nodes.items():
        t = node.get("type")
        if t in UI_ONLY_TYPES:
            continue
        node_def = object_info.get(t)
        if node_def is None:
            p.append(f"{name}: node {nid} has type {t}, unknown to ComfyUI and this pack")
            continue
        skip = skipped_for(t, comfy_version)
        for inp in node.get("inputs", []):
            known = {n for n, _ in widget_slots(node_def, skip)} | {"upload"}
            if inp.get("widget") and inp["widget"].get("name") not in known:
                p.append(f"{name}: node {nid} ({t}) lists widget input {inp['widget'].get('name')} the schema "
                         "does not have" + (" in the baseline layout" if skip else ""))
        slots = widget_slots(node_def, skip)
        values = node.get("widgets_values") or []
        if len(values) != len(slots):
            p.append(f"{name}: node {nid} ({t}) has {len(values)} widget values; the schema needs "
                     f"{len(slots)}: {[f'{n}:{k}' for n, k in slots]}")
            continue
        specs = {n: s for n, s, _ in ordered_inputs(node_def)}
        for (wname, kind), value in zip(slots, values):
            p.extend(f"{name}: node {nid} ({t}) {wname}: {msg}"
                     for msg in _value_problems(specs[wname], kind, value))
    return p


def _value_problems(spec, kind, value):
    if kind == "control":
        return [] if value in CONTROL_VALUES else [f"control value {value!r}"]
    if kind == "upload":
        return []
    t, opts = spec_type(spec), spec_opts(spec)
    if t in ("COMBO", DYNAMIC_COMBO):
        options = combo_options(spec) or []
        nested = dynamic_option_inputs(spec, value)
        if nested:
            return [f"{value!r} selects a DynamicCombo option with inputs {nested} (not supported here)"]
        # model/file lists depend on the user's folders: any string goes; fixed lists must contain it
        if value not in options and not (isinstance(value, str) and _is_file_list(options)):
            return [f"{value!r} is not one of {options[:12]}"]
        return []
    if t == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"{value!r} is not a boolean"]
    if t == "STRING":
        return [] if isinstance(value, str) else [f"{value!r} is not a string"]
    if t in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (t == "INT" and value != int(value)):
            return [f"{value!r} is not a{'n integer' if t == 'INT' else ' number'}"]
        lo, hi = opts.get("min"), opts.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return [f"{value} outside [{lo}, {hi}]"]
    return []


def _is_file_list(options):
    """A combo listing files of the user's folders (checkpoints, inputs...) rather than fixed choices."""
    exts = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".png", ".jpg", ".jpeg", ".webp",
            ".mp4", ".webm", ".mov", ".mkv", ".gif")
    files = [o for o in options if o not in BUILTIN_FILE_CHOICES]
    return not files or all(isinstance(o, str) and o.lower().endswith(exts) for o in files)


# Entries core lists beside the user's files in a file combo (VAELoader: no-VAE and preview decoders).
BUILTIN_FILE_CHOICES = {"pixel_space", "taesd", "taesdxl", "taesd3", "taef1"}


# --- offline twin check (no server) ---------------------------------------------------------------------

def ui_widget_values_by_name(node):
    """Map widget input name -> value using only the UI file (frontend 1.2x layout, see module doc)."""
    values = list(node.get("widgets_values") or [])
    widgets = [i for i in node.get("inputs", []) if i.get("widget")]
    out, k = {}, 0
    for w in widgets:
        if k >= len(values):
            break
        out[w["widget"]["name"]] = values[k]
        k += 1
        # an INT seed-like widget is followed by its control_after_generate value
        if w.get("type") == "INT" and k < len(values) and values[k] in CONTROL_VALUES:
            k += 1
    return out, k == len(values)


def twin_problems(ui, api, name="workflow"):
    """Differences between a UI workflow and its API twin: nodes, links and widget values."""
    p = []
    nodes = ui_nodes(ui)
    links = ui_links(ui)
    ui_ids = {str(i) for i in nodes}
    api_ids = set(api)
    if ui_ids != api_ids:
        p.append(f"{name}: node ids differ: only in UI {sorted(ui_ids - api_ids)}, only in API "
                 f"{sorted(api_ids - ui_ids)}")
    for nid in sorted(ui_ids & api_ids, key=int):
        node, entry = nodes[int(nid)], api[nid]
        if node["type"] != entry.get("class_type"):
            p.append(f"{name}: node {nid} is {node['type']} in UI but {entry.get('class_type')} in API")
            continue
        api_inputs = entry.get("inputs", {})
        # links: every UI input link appears in the API, and every API link exists in the UI
        ui_linked = {}
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                src, sslot = links.get(inp["link"], (None, None))[:2]
                ui_linked[inp["name"]] = [str(src), sslot]
        api_linked = {k: v for k, v in api_inputs.items() if _is_link(v)}
        if ui_linked != api_linked:
            p.append(f"{name}: node {nid} ({node['type']}) links differ: UI {ui_linked} vs API {api_linked}")
        widget_values, consumed_all = ui_widget_values_by_name(node)
        if not consumed_all:
            p.append(f"{name}: node {nid} ({node['type']}) widgets_values do not line up with its widget inputs")
        for key, value in api_inputs.items():
            if _is_link(value):
                continue
            if key not in widget_values:
                if required_additions(node["type"]).get(key, object()) == value:
                    continue   # a later ComfyUI's required input: the twin carries it, the baseline file cannot
                p.append(f"{name}: node {nid} ({node['type']}) API input {key} has no widget in the UI graph")
            elif widget_values[key] != value:
                p.append(f"{name}: node {nid} ({node['type']}) {key}: UI {widget_values[key]!r} vs API {value!r}")
        for key in widget_values:
            if key not in api_inputs and key != "upload":
                p.append(f"{name}: node {nid} ({node['type']}) widget {key} is missing from the API twin")
    return p


def _is_link(v):
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)

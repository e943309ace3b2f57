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
"""
from __future__ import annotations

import json
from pathlib import Path

CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
UI_ONLY_TYPES = {"Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

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


# --- schema helpers (object_info) --------------------------------------------------------------------

def ordered_inputs(node_def):
    """[(name, spec, optional)] in the schema's order (required, then optional)."""
    spec_all = node_def.get("input", {})
    order = node_def.get("input_order") or {k: list(v) for k, v in spec_all.items()}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = spec_all.get(section, {}).get(name)
            if spec is not None:
                out.append((name, spec, section == "optional"))
    return out


def spec_type(spec):
    t = spec[0]
    return "COMBO" if isinstance(t, list) else t


def spec_opts(spec):
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec):
    return spec[0] if isinstance(spec[0], list) else spec_opts(spec).get("options")


def is_widget(spec):
    return spec_type(spec) in WIDGET_TYPES and not spec_opts(spec).get("forceInput")


def upload_flag(spec):
    opts = spec_opts(spec)
    return any(k.endswith("_upload") and v for k, v in opts.items())


def widget_slots(node_def):
    """The node's widgets_values layout: [(input name, kind)] with kind value | control | upload."""
    slots = []
    for name, spec, _ in ordered_inputs(node_def):
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


def ui_to_api(ui, object_info):
    """Convert a UI workflow to an API prompt using the live schema. Returns (api dict, problems)."""
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
        slots = widget_slots(node_def)
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
        for name, spec, optional in ordered_inputs(node_def):
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
            elif not optional:
                problems.append(f"node {nid} ({t}): required input {name} is not connected")
        api[str(nid)] = {"inputs": inputs, "class_type": t}
    return api, problems


def structure_problems(ui, object_info, name="workflow"):
    """Everything that would make the frontend or the server reject or mis-load a UI workflow."""
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
        for inp in node.get("inputs", []):
            known = {n for n, _ in widget_slots(node_def)} | {"upload"}
            if inp.get("widget") and inp["widget"].get("name") not in known:
                p.append(f"{name}: node {nid} ({t}) lists widget input {inp['widget'].get('name')} the schema "
                         "does not have")
        slots = widget_slots(node_def)
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
    if t == "COMBO":
        options = combo_options(spec) or []
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
    return not options or all(isinstance(o, str) and o.lower().endswith(exts) for o in options)


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
                p.append(f"{name}: node {nid} ({node['type']}) API input {key} has no widget in the UI graph")
            elif widget_values[key] != value:
                p.append(f"{name}: node {nid} ({node['type']}) {key}: UI {widget_values[key]!r} vs API {value!r}")
        for key in widget_values:
            if key not in api_inputs and key != "upload":
                p.append(f"{name}: node {nid} ({node['type']}) widget {key} is missing from the API twin")
    return p


def _is_link(v):
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)

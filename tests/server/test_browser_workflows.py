"""Real browser: Debian's chromium, headless, driven by Playwright against the real server.

For each example: open ComfyUI, open the template browser, find the example among the templates and
click it; assert no missing-node report, every node type registered, the frontend re-serialises the
graph with the same widget values and converts it to exactly our API twin; point the widgets at the
fixture files, press Run, wait for success and check the saved output; no console error throughout.
Screenshots land in the test's temporary folder.

What differs between frontend versions is written down in FRONTEND_TRAITS, per version, and nowhere
else: checked on 1.27.10 (ComfyUI 0.3.64's pin), 1.47.12 (0.30.0's pin) and 1.58.1 (newest on PyPI, installed
over 0.30.0's pin in the CI leg 0.30.0+frontend-1.58.1, or served through CFA_FRONTEND_ROOT, see
cfa_serverkit.frontend_root). Differences that come from the server's schemas (optional widgets a newer
ComfyUI added) are in cfa_workflow_tools.ADDED_WIDGETS.

Needs COMFYUI_PATH, /usr/bin/chromium (apt-get install chromium) and the playwright Python package
(installed with PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1: Playwright never downloads a browser here).
`bash .ci/setup_browser` installs both.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass

import pytest

import cfa_serverkit as kit
import cfa_test_graphs as graphs
import cfa_workflow_tools as wt

UI_NAMES = wt.example_names()
CHROMIUM = os.environ.get("CFA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Requests that fail on a stock ComfyUI whatever the workflow: the browser's favicon probe and the
# optional user stylesheet link in index.html.
BENIGN_404 = (re.compile(r"/favicon\.ico$"), re.compile(r"/user\.css$"))

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


@dataclass(frozen=True)
class ConsoleAllowance:
    """One console error the frontend logs by itself, at start-up or when it opens any workflow whose nodes
    carry registry ids (test_frontend_console_errors_without_pack checks that it happens on a server
    without this pack)."""
    text: str       # regex, matched against the whole message
    source: str     # regex, searched in the URL of the script that logged it
    why: str
    trigger: str = "start-up"   # or "registry": the lookup of the opened template's registry ids

    def matches(self, text, url):
        return re.fullmatch(self.text, text) is not None and re.search(self.source, url or "") is not None


# With --disable-api-nodes (cfa_serverkit starts every server so) ComfyUI 0.30.0 serves a Content Security
# Policy limiting connections to the server itself. Frontends >= 1.47 open a default workflow on a fresh
# user (Z-Image Turbo) and probe the download URLs of its models on huggingface.co; the policy blocks each
# probe with two console errors.
def _csp_probe(script):
    return (
        ConsoleAllowance(r"Connecting to 'https://huggingface\.co/Comfy-Org/z_image_turbo/[^' ]+\.safetensors' "
                         r"violates the following Content Security Policy directive: \"connect-src 'self' "
                         r"data:\"\. The action has been blocked\.", rf"/assets/{script}-[\w-]+\.js$",
                         "default workflow's model download probe, blocked by the server's CSP"),
        ConsoleAllowance(r"Fetch API cannot load https://huggingface\.co/Comfy-Org/z_image_turbo/\S+\.safetensors\. "
                         r"Refused to connect because it violates the document's Content Security Policy\.",
                         rf"/assets/{script}-[\w-]+\.js$",
                         "default workflow's model download probe, blocked by the server's CSP"),
    )


# Frontends >= 1.47 look up on api.comfy.org the registry ids (properties.cnr_id) of the nodes of a template
# opened from the template browser; the server's CSP blocks the request. Seen on opening each of our
# examples, but neither on opening a core-only template nor on loadGraphData of our example without the
# pack, so it cannot be reproduced without the pack: instead the test checks that the ids looked up are
# exactly registry ids the opened example's nodes carry (the request names the workflow, not our code).
REGISTRY_LOOKUP = ConsoleAllowance(
    r"Connecting to 'https://api\.comfy\.org/nodes\?node_id=[\w.&=-]+' violates the following Content Security "
    r"Policy directive: \"connect-src 'self' data:\"\. The action has been blocked\.",
    r"/assets/vendor-axios-[\w-]+\.js$", "registry lookup of the workflow's node packs, blocked by the server's CSP",
    "registry")


@dataclass(frozen=True)
class FrontendTraits:
    since: tuple                 # first frontend version checked with these traits
    search_placeholder: str      # regex for the template browser's search box (inside its dialog)
    missing_node_report: str     # "dialog": a dialog naming the types; "error-panel": error overlay + panel
    meta_extra: tuple            # keys graphToPrompt adds to each node's _meta besides "title" (from properties)
    widgetless_values: object    # widgets_values serialised for a node without widgets ([] or None)
    ui_only_inputs: tuple = ()   # (node type, input, value) the frontend may add to a queued prompt
    console_errors: tuple = ()   # ConsoleAllowance entries


FRONTEND_TRAITS = [
    # the video preview widget that appears once LoadVideo has loaded a file is serialised as an input
    # ("video-preview": "") in the prompt that Run queues, on every checked frontend
    FrontendTraits((1, 27, 10), r"^Search templates\.\.\.$", "dialog", (), [], (("LoadVideo", "video-preview", ""),)),
    FrontendTraits((1, 47, 12), r"^Search \.\.\.$", "error-panel", (), [], (("LoadVideo", "video-preview", ""),), (
        ConsoleAllowance(r"ComfyApp graph accessed before initialization", r"/assets/settingStore-[\w-]+\.js$",
                         "logged while the settings load, before the first graph exists"),
        *_csp_probe("missingModelDownload"), REGISTRY_LOOKUP)),
    FrontendTraits((1, 58, 1), r"^Search \.\.\.$", "error-panel", ("cnr_id", "ver"), None,
                   (("LoadVideo", "video-preview", ""),), (*_csp_probe("missingModelMetadata"), REGISTRY_LOOKUP)),
]


def traits_for(version):
    """The traits of the newest checked frontend not newer than ``version``."""
    v = tuple(int(p) for p in re.findall(r"\d+", str(version))[:3])
    older = [t for t in FRONTEND_TRAITS if t.since <= v]
    if not older:
        raise AssertionError(f"frontend {version} is older than every checked version {FRONTEND_TRAITS[0].since}")
    return older[-1]


@pytest.fixture(scope="module")
def frontend(browser, comfy_server):
    """(version string, FrontendTraits) of the frontend the server serves."""
    page = new_page(browser)
    try:
        _open_ui(page, comfy_server)
        version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__")
    finally:
        close_page(page)
    assert version, "the frontend does not report window.__COMFYUI_FRONTEND_VERSION__"
    traits = traits_for(version)
    print(f"\n[cfa] frontend {version} (traits of {'.'.join(map(str, traits.since))})")
    return version, traits


@pytest.fixture(scope="module")
def browser(comfy_server):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"browser test needs Debian's chromium at {CHROMIUM} (bash .ci/setup_browser installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test needs the playwright Python package (bash .ci/setup_browser installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def new_page(browser):
    """A page in a fresh browser context (a new profile: nothing stored by an earlier test, such as the
    workflow tabs that frontends >= 1.47 restore from local storage). Close it with close_page."""
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    return ctx.new_page()


def close_page(page):
    page.context.close()


class PageWatch:
    """Collects console errors, uncaught exceptions and failed requests of one page."""

    def __init__(self, page, allowed_404=(), console_allowed=()):
        self.problems, self.allowed_seen, self.console_errors = [], [], []
        self.console_allowed = tuple(console_allowed)
        self.allowed = list(BENIGN_404) + [re.compile(a) for a in allowed_404]
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught exception: {e}"))
        page.on("response", self._response)

    def _ok_url(self, url):
        return any(a.search(url) for a in self.allowed)

    def _console(self, msg):
        if msg.type != "error":
            return
        url = (msg.location or {}).get("url", "")
        if msg.text.startswith("Failed to load resource") and self._ok_url(url):
            return  # reported (and judged) by _response
        self.console_errors.append((msg.text, url))
        allowance = next((a for a in self.console_allowed if a.matches(msg.text, url)), None)
        if allowance is not None:
            self.allowed_seen.append((allowance, msg.text))
            return
        self.problems.append(f"console error: {msg.text} ({url})")

    def _response(self, resp):
        if resp.status >= 400 and not (resp.status == 404 and self._ok_url(resp.url)):
            self.problems.append(f"HTTP {resp.status} for {resp.url}")


def _open_ui(page, server):
    page.goto(server.url)
    page.wait_for_function(
        "() => window.app && window.app.graph && window.app.vueAppReady && window.LiteGraph && "
        "Object.keys(LiteGraph.registered_node_types).length > 50", timeout=90_000)
    page.evaluate("""() => {
        window.__cfa = {events: []};
        for (const t of ['execution_success', 'execution_error', 'execution_interrupted'])
            window.app.api.addEventListener(t, e => window.__cfa.events.push({type: t, detail: e.detail}));
    }""")


def _missing_node_report(page):
    """Node types the frontend could not create, the text of any open dialog, and the error report of
    frontends >= 1.47 ({group test id: text}: missing node packs, models, media...), opened from its
    overlay when one is shown."""
    report = page.evaluate("""() => ({
        unregistered: window.app.graph.nodes.filter(n => !LiteGraph.registered_node_types[n.type])
                                          .map(n => n.type),
        dialogs: Array.from(document.querySelectorAll('.p-dialog'))
                      .filter(d => d.offsetParent !== null || d.getClientRects().length)
                      .map(d => d.innerText.slice(0, 400)),
        overlay: !!document.querySelector('[data-testid="error-overlay-see-errors"]'),
    })""")
    if report.pop("overlay"):
        page.locator('[data-testid="error-overlay-see-errors"]').first.click()
        page.locator('[data-testid="errors-summary-hero"]').first.wait_for(timeout=30_000)
    report["error_groups"] = page.evaluate("""() => Object.fromEntries(
        Array.from(document.querySelectorAll('[data-testid^="error-group-"]'))
             .filter(e => e.getAttribute('data-testid') !== 'error-group-display-message')
             .map(e => [e.getAttribute('data-testid'), e.innerText]))""")
    return report


def _unexpected_errors(report, ui):
    """Error groups a correctly loaded example may show in frontends >= 1.47 are only the placeholders a
    fresh install lacks: the model files and the input media it names. Returns what else is reported."""
    models = {str(v) for n in ui["nodes"] for v in (n.get("widgets_values") or [])
              if isinstance(v, str) and v.endswith(".safetensors")}
    media_nodes = {n.get("title") or n["type"] for n in ui["nodes"] if n["type"] in ("LoadVideo", "LoadImage")}
    media_titles = {"LoadVideo": "Load Video", "LoadImage": "Load Image"}
    media_nodes |= {media_titles[n["type"]] for n in ui["nodes"] if n["type"] in media_titles}
    bad = {}
    for group, text in report["error_groups"].items():
        if group == "error-group-missing-model":
            named = set(re.findall(r"\S+\.safetensors", text))
            if not named or not named <= models:
                bad[group] = text
        elif group == "error-group-missing-media":
            rows = re.findall(r"^(.+?) - \w+$", text, re.M)
            if not rows or not set(rows) <= media_nodes:
                bad[group] = text
        else:
            bad[group] = text
    return bad


# Frontends >= 1.47 list several hundred core templates; filtering and rendering them took 45 s on a loaded
# two-core machine.
TEMPLATE_TIMEOUT_MS = 120_000


def _open_template(page, name, traits, thumbnail=True):
    """Open the template browser (the 'Browse Templates' command of the menu), search, click the card;
    with ``thumbnail``, first wait until the card shows our example's .jpg."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.locator('[data-testid="template-workflows-content"]').wait_for(timeout=TEMPLATE_TIMEOUT_MS)
    dialog = page.get_by_role("dialog").filter(has=page.locator('[data-testid="template-workflows-content"]'))
    search = dialog.get_by_placeholder(re.compile(traits.search_placeholder))
    card = page.locator(f'[data-testid="template-workflow-{name}"]')
    # A search typed while the list is still being built can be dropped (seen once on a loaded two-core
    # machine: the card never showed in 120 s); type it again if the card has not shown up meanwhile.
    for attempt in range(3):
        search.fill(name)
        try:
            card.wait_for(timeout=TEMPLATE_TIMEOUT_MS // 3)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            search.fill("")
    if thumbnail:
        # the card shows our thumbnail (example_workflows/<name>.jpg, fetched by the frontend as a blob)
        from PIL import Image
        with Image.open(wt.EXAMPLES_DIR / f"{name}.jpg") as im:
            width, height = im.size
        page.wait_for_function(
            "([el, w, h]) => Array.from(el.querySelectorAll('img')).some("
            "i => i.complete && i.naturalWidth === w && i.naturalHeight === h)",
            arg=[card.element_handle(), width, height], timeout=TEMPLATE_TIMEOUT_MS)
    card.click()
    page.locator('[data-testid="template-workflows-content"]').wait_for(state="detached", timeout=TEMPLATE_TIMEOUT_MS)


def _placeholder_inputs(ui):
    """Input files the example names but a fresh install lacks: their previews 404 until replaced."""
    out = []
    for n in ui["nodes"]:
        if n["type"] in ("LoadVideo", "LoadImage") and n.get("widgets_values"):
            out.append(r"/api/view\?.*filename=" + re.escape(str(n["widgets_values"][0])) + r"(&|$)")
    return out


def _expected_prompt(api, ui, object_info, comfy_version, traits):
    """What graphToPrompt must give for a UI graph whose API twin (possibly with changed widgets) is ``api``:
    the twin's inputs plus the defaults of the widgets this ComfyUI added (ADDED_WIDGETS), and a _meta of
    the node's title (its own, else the live display name) plus the keys this frontend adds. The twin's
    ADDED_REQUIRED inputs come from the frontend only on a ComfyUI that has them."""
    added = wt.added_widgets(comfy_version)
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    out = {}
    for nid, entry in api.items():
        t, node = entry["class_type"], nodes[nid]
        inputs = {name: value for name, value in entry["inputs"].items()
                  if (t, name) not in wt.ADDED_REQUIRED or (t, name) in added}
        inputs.update({name: default for (ct, name), default in added.items() if ct == t})
        meta = {"title": node.get("title") or object_info[t].get("display_name") or t}
        meta.update({k: node["properties"][k] for k in traits.meta_extra})
        out[nid] = {"inputs": inputs, "class_type": t, "_meta": meta}
    return out


def _expected_widgets_values(node, object_info, comfy_version, traits):
    if node["type"] in wt.UI_ONLY_TYPES:
        return node.get("widgets_values")
    node_def = object_info[node["type"]]
    if not wt.widget_slots(node_def):
        return traits.widgetless_values
    return wt.values_as_loaded(node, node_def, comfy_version)


def _without_ui_only(prompt, traits):
    """The prompt without the UI-only inputs this frontend is known to add (only with their known value)."""
    out = json.loads(json.dumps(prompt))
    for entry in out.values():
        for t, key, value in traits.ui_only_inputs:
            if entry.get("class_type") == t and entry["inputs"].get(key, object()) == value:
                del entry["inputs"][key]
    return out


_SWAP_JS = """(args) => {
    // replace node `id` by a new node of type `type` with `widgets`, feeding the same inputs downstream
    const g = window.app.graph;
    const old = g.getNodeById(args.id);
    const node = LiteGraph.createNode(args.type);
    node.pos = [old.pos[0], old.pos[1]];
    g.add(node);
    for (const [name, value] of Object.entries(args.widgets)) {
        const w = node.widgets.find(w => w.name === name);
        if (!w) throw new Error(`${args.type} has no widget ${name}`);
        w.value = value;
    }
    const linkOf = id => (g.links.get ? g.links.get(id) : g.links[id]);
    const targets = (old.outputs[0].links || []).map(linkOf).map(l => [l.target_id, l.target_slot]);
    for (const [target, slot] of targets) node.connect(0, g.getNodeById(target), slot);
    g.remove(old);
    g.setDirtyCanvas(true, true);
    return node.id;
}"""


def _swap_in_text_encoder_standin(page, traits, want, fx):
    """In the open graph, replace DualCLIPLoader (T5-XXL cannot be generated for a test) by CLIPLoader on the
    fixture CLIP-L, as a user would swap a node; returns the prompt the page now converts to, after checking
    it is `want` with exactly that swap."""
    (old,) = graphs.nodes_of(want, "DualCLIPLoader")
    standin = graphs.TEXT_ENCODER_STANDIN
    new_id = page.evaluate(_SWAP_JS, {"id": int(old), "type": standin["class_type"],
                                      "widgets": {"clip_name": fx["clip_l"], "type": standin["type"]}})
    prompt = _graph_to_prompt(page, traits)
    swapped = graphs.with_text_encoder_standin(want, fx, new_id)
    assert set(prompt) == set(swapped), f"after the swap the graph holds {sorted(prompt)}, not {sorted(swapped)}"
    for nid, entry in swapped.items():
        got = prompt[nid]["inputs"]
        if nid == str(new_id):   # the stand-in may carry widgets this ComfyUI added (their defaults)
            assert {k: got.get(k) for k in entry["inputs"]} == entry["inputs"], got
        else:
            assert got == entry["inputs"], f"node {nid} after the swap: {got} != {entry['inputs']}"
    return prompt


def _graph_to_prompt(page, traits):
    return _without_ui_only(
        json.loads(page.evaluate("async () => JSON.stringify((await window.app.graphToPrompt()).output)")), traits)


@pytest.mark.parametrize("name", UI_NAMES)
def test_example_in_browser(name, browser, frontend, comfy_server, pack_nodes, object_info, comfy_version,
                            tmp_path):
    fx = comfy_server.fixtures
    version, traits = frontend
    ui = wt.load_json(wt.EXAMPLES_DIR / f"{name}.json")
    twin = graphs.load_api(name)
    page = new_page(browser)
    watch = PageWatch(page, allowed_404=_placeholder_inputs(ui), console_allowed=traits.console_errors)
    t0 = time.time()
    try:
        _open_ui(page, comfy_server)
        _open_template(page, name, traits)
        page.wait_for_function(f"() => window.app.graph.nodes.length === {len(ui['nodes'])}", timeout=30_000)
        page.wait_for_timeout(500)  # let dialogs or error reports that loading may raise appear
        report = _missing_node_report(page)
        page.screenshot(path=str(tmp_path / f"{name}-loaded.png"))
        assert not report["unregistered"], f"{name}: node types missing in the UI: {report['unregistered']}"
        assert not report["dialogs"], f"{name}: a dialog opened on load: {report['dialogs']}"
        unexpected = _unexpected_errors(report, ui)
        assert not unexpected, f"{name}: frontend {version} reports on load: {unexpected}"

        # the frontend keeps every widget value as written (our widgets_values layout is the frontend's);
        # on a newer ComfyUI it appends the widgets that version added, with their defaults
        serialized = page.evaluate("() => JSON.stringify(window.app.graph.serialize())")
        serialized = {n["id"]: n for n in json.loads(serialized)["nodes"]}
        for node in ui["nodes"]:
            got = serialized[node["id"]].get("widgets_values")
            want = _expected_widgets_values(node, object_info, comfy_version, traits)
            assert got == want, (f"{name}: node {node['id']} ({node['type']}) widgets_values after loading in "
                                 f"frontend {version}: {got} != {want} (file: {node.get('widgets_values')})")

        # the frontend's own UI->API conversion gives exactly our API twin (plus the named additions)
        prompt = _graph_to_prompt(page, traits)
        want = _expected_prompt(twin, ui, object_info, comfy_version, traits)
        assert prompt == want, (f"{name}: frontend {version} converts the UI graph to\n"
                                f"{json.dumps(prompt, sort_keys=True)}\nnot the API twin (+ additions)\n"
                                f"{json.dumps(want, sort_keys=True)}")

        # point the widgets at the fixture files (and a seed of its own, so no cached result answers)
        wanted = graphs.with_seed(graphs.apply_overrides(twin, fx, name), 1000 + UI_NAMES.index(name))
        changes = {nid: {k: v for k, v in e["inputs"].items() if twin[nid]["inputs"].get(k) != v}
                   for nid, e in wanted.items()}
        page.evaluate("""(changes) => {
            for (const [id, values] of Object.entries(changes)) {
                const node = window.app.graph.getNodeById(Number(id));
                for (const [name, value] of Object.entries(values)) {
                    const w = node.widgets.find(w => w.name === name);
                    if (!w) throw new Error(`node ${id} has no widget ${name}`);
                    w.value = value;
                    w.callback?.(value);
                }
            }
            window.app.graph.setDirtyCanvas(true, true);
        }""", changes)
        prompt = _graph_to_prompt(page, traits)
        want = _expected_prompt(wanted, ui, object_info, comfy_version, traits)
        assert prompt == want, (f"{name}: widget changes did not reach the prompt:\n"
                                f"{json.dumps(prompt, sort_keys=True)}\n{json.dumps(want, sort_keys=True)}")

        why = graphs.not_runnable(name, comfy_version)
        if why:
            page.screenshot(path=str(tmp_path / f"{name}-loaded-only.png"))
            pytest.skip(f"{name} loaded and converted correctly; not run: {why}")
        if graphs.nodes_of(twin, "DualCLIPLoader"):
            want = _swap_in_text_encoder_standin(page, traits, want, fx)

        # queue from the UI: the Run button
        page.locator('[data-testid="queue-button"]').first.click()
        page.wait_for_function("() => window.__cfa.events.length > 0", timeout=240_000)
        event = page.evaluate("() => window.__cfa.events[0]")
        page.screenshot(path=str(tmp_path / f"{name}-ran.png"))
        assert event["type"] == "execution_success", f"{name}: queued from the UI: {json.dumps(event)[:3000]}"
        prompt_id = event["detail"]["prompt_id"]
        status, hist = kit.http_json(f"{comfy_server.url}/history/{prompt_id}")
        assert status == 200 and prompt_id in hist, f"{name}: no history for {prompt_id}"
        # what ran is what the frontend converted (so the added widgets' defaults reached the server)
        ran = _without_ui_only(hist[prompt_id]["prompt"][2], traits)
        assert {k: v["inputs"] for k, v in ran.items()} == {k: v["inputs"] for k, v in want.items()}, \
            f"{name}: the server ran {json.dumps(ran, sort_keys=True)[:3000]}"
        result = kit.PromptResult(http_status=200, response=None, prompt_id=prompt_id, outcome="success",
                                  history=hist[prompt_id])
        graphs.check_example_outputs(name, kit.output_files(comfy_server, result), fx)
        report = _missing_node_report(page)
        assert not report["dialogs"], f"{name}: a dialog opened while running: {report['dialogs']}"
        assert "error-group-missing-node" not in report["error_groups"], report
        assert not watch.problems, f"{name}: browser reported:\n" + "\n".join(watch.problems)
        carried = {n.get("properties", {}).get("cnr_id") for n in ui["nodes"]} - {None}
        for allowance, text in watch.allowed_seen:
            if allowance.trigger == "registry":
                looked_up = set(re.findall(r"node_id=([\w.-]+)", text))
                assert looked_up and looked_up <= carried, \
                    f"{name}: registry lookup of {looked_up}, but the example's nodes carry {carried}: {text}"
        print(f"\n[cfa] browser {name}: {time.time() - t0:.1f}s on frontend {version} (screenshots in {tmp_path}); "
              f"allowed start-up console errors seen: {len(watch.allowed_seen)}")
    except Exception:
        page.screenshot(path=str(tmp_path / f"{name}-failed.png"))
        raise
    finally:
        close_page(page)


def test_browser_reports_missing_nodes(browser, frontend, comfy_server, pack_nodes, tmp_path):
    """The checks above can fail: a graph with an unknown node type is caught by them, and the frontend
    tells the user (1.27: a dialog naming the type; >= 1.47: an error overlay whose report lists the
    missing node pack, named by the node's cnr_id)."""
    version, traits = frontend
    ui = wt.load_json(wt.EXAMPLES_DIR / f"{UI_NAMES[0]}.json")
    broken = json.loads(json.dumps(ui))
    victim = next(n for n in broken["nodes"] if n["type"].startswith("CFA_"))
    victim["type"] = "CFA_NodeThatDoesNotExist"
    page = new_page(browser)
    try:
        _open_ui(page, comfy_server)
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true, 'broken'); }", broken)
        page.wait_for_timeout(1000)
        report = _missing_node_report(page)
        page.screenshot(path=str(tmp_path / "missing-node.png"))
        assert "CFA_NodeThatDoesNotExist" in report["unregistered"], report
        if traits.missing_node_report == "dialog":
            assert any("CFA_NodeThatDoesNotExist" in d for d in report["dialogs"]), \
                f"frontend {version}: no missing-node dialog naming the type: {report}"
        else:
            group = report["error_groups"].get("error-group-missing-node", "")
            assert victim["properties"]["cnr_id"] in group, \
                f"frontend {version}: the error report does not list the missing node pack: {report}"
            assert "error-group-missing-node" in _unexpected_errors(report, broken), report
    finally:
        close_page(page)


@pytest.fixture(scope="module")
def server_without_pack(comfyui_path, tmp_path_factory):
    """A second server with every custom node disabled (this pack too), over a base directory of its own with
    empty model folders, as on a fresh install: the frontend's default workflow then finds its models missing
    and probes their downloads (with model files present it silently picks them instead)."""
    base = tmp_path_factory.mktemp("comfy_base_without_pack")
    kit.prepare_base_directory(base)
    server = kit.ComfyServer(comfyui_path, base, extra_args=["--disable-all-custom-nodes"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_startup_console_errors_without_pack(browser, frontend, server_without_pack, tmp_path):
    """The console allow-list is exact: without this pack, the frontend logs every allowed start-up console
    error by itself (so the list names only the frontend's own messages) and no other one at start-up (so it
    is complete). The registry lookup (REGISTRY_LOOKUP) is checked where it happens, in the examples' test."""
    version, traits = frontend
    info = server_without_pack.object_info()
    assert not [k for k, v in info.items() if str(v.get("python_module", "")).endswith(kit.PACK_DIR_NAME)], \
        "the pack is loaded although custom nodes are disabled"
    page = new_page(browser)
    watch = PageWatch(page, console_allowed=traits.console_errors)

    def wait_for(trigger):
        wanted = {a for a in traits.console_errors if a.trigger == trigger}
        assert trigger != "registry"
        deadline = time.time() + 30
        while time.time() < deadline and not wanted <= {a for a, _ in watch.allowed_seen}:
            page.wait_for_timeout(250)
        page.wait_for_timeout(2000)  # anything else it logs

    try:
        _open_ui(page, server_without_pack)
        wait_for("start-up")
        page.screenshot(path=str(tmp_path / "without-pack.png"))
    finally:
        close_page(page)
    seen = {a for a, _ in watch.allowed_seen}
    missing = [f"{a.why} ({a.trigger}): {a.text}" for a in traits.console_errors
               if a not in seen and a.trigger != "registry"]
    assert not missing, (f"frontend {version}: allowed console errors that do not happen without the pack "
                         f"(drop them from FRONTEND_TRAITS):\n" + "\n".join(missing))
    assert not watch.problems, (f"frontend {version} without the pack reports more than the allow-list:\n"
                                + "\n".join(watch.problems))
    print(f"\n[cfa] frontend {version} start-up console errors without the pack: "
          f"{[t[:70] for t, _ in watch.console_errors]}")

"""Real browser: Debian's chromium, headless, driven by Playwright against the real server.

For each example: open ComfyUI, open the template browser, find the example among the templates and
click it; assert no missing-node dialog, every node type registered, the frontend re-serialises the
graph with the same widget values and converts it to exactly our API twin; point the widgets at the
fixture files, press Run, wait for success and check the saved output; no console error throughout.
Screenshots land in the test's temporary folder.

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


@pytest.fixture(scope="module")
def browser(comfy_server, tmp_path_factory):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"browser test needs Debian's chromium at {CHROMIUM} (bash .ci/setup_browser installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test needs the playwright Python package (bash .ci/setup_browser installs it)")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data-dir
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1000})
        try:
            yield ctx
        finally:
            ctx.close()


class PageWatch:
    """Collects console errors, uncaught exceptions and failed requests of one page."""

    def __init__(self, page, allowed_404=()):
        self.problems = []
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
    """Node types the frontend could not create, and the text of any open dialog."""
    return page.evaluate("""() => ({
        unregistered: window.app.graph.nodes.filter(n => !LiteGraph.registered_node_types[n.type])
                                          .map(n => n.type),
        dialogs: Array.from(document.querySelectorAll('.p-dialog'))
                      .filter(d => d.offsetParent !== null || d.getClientRects().length)
                      .map(d => d.innerText.slice(0, 400)),
    })""")


def _open_template(page, name):
    """Open the template browser (the 'Browse Templates' command of the menu), search, click the card."""
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    page.locator('[data-testid="template-workflows-content"]').wait_for(timeout=30_000)
    page.get_by_placeholder(re.compile("Search templates", re.I)).fill(name)
    card = page.locator(f'[data-testid="template-workflow-{name}"]')
    card.wait_for(timeout=30_000)
    # the card shows our thumbnail (example_workflows/<name>.jpg, fetched by the frontend as a blob)
    from PIL import Image
    with Image.open(wt.EXAMPLES_DIR / f"{name}.jpg") as im:
        width, height = im.size
    page.wait_for_function(
        "([el, w, h]) => Array.from(el.querySelectorAll('img')).some("
        "i => i.complete && i.naturalWidth === w && i.naturalHeight === h)",
        arg=[card.element_handle(), width, height], timeout=30_000)
    card.click()
    page.locator('[data-testid="template-workflows-content"]').wait_for(state="detached", timeout=30_000)


def _placeholder_inputs(ui):
    """Input files the example names but a fresh install lacks: their previews 404 until replaced."""
    out = []
    for n in ui["nodes"]:
        if n["type"] in ("LoadVideo", "LoadImage") and n.get("widgets_values"):
            out.append(r"/api/view\?.*filename=" + re.escape(str(n["widgets_values"][0])) + r"(&|$)")
    return out


@pytest.mark.parametrize("name", UI_NAMES)
def test_example_in_browser(name, browser, comfy_server, pack_nodes, tmp_path):
    fx = comfy_server.fixtures
    ui = wt.load_json(wt.EXAMPLES_DIR / f"{name}.json")
    twin = graphs.load_api(name)
    page = browser.new_page()
    watch = PageWatch(page, allowed_404=_placeholder_inputs(ui))
    t0 = time.time()
    try:
        _open_ui(page, comfy_server)
        _open_template(page, name)
        page.wait_for_function(f"() => window.app.graph.nodes.length === {len(ui['nodes'])}", timeout=30_000)
        page.wait_for_timeout(500)  # let dialogs that loading may raise appear
        report = _missing_node_report(page)
        page.screenshot(path=str(tmp_path / f"{name}-loaded.png"))
        assert not report["unregistered"], f"{name}: node types missing in the UI: {report['unregistered']}"
        assert not report["dialogs"], f"{name}: a dialog opened on load: {report['dialogs']}"

        # the frontend keeps every widget value as written (our widgets_values layout is the frontend's)
        serialized = page.evaluate("() => JSON.stringify(window.app.graph.serialize())")
        serialized = {n["id"]: n for n in json.loads(serialized)["nodes"]}
        for node in ui["nodes"]:
            got = serialized[node["id"]].get("widgets_values")
            assert got == node.get("widgets_values"), \
                f"{name}: node {node['id']} ({node['type']}) widgets_values after loading: {got} != {node.get('widgets_values')}"

        # the frontend's own UI->API conversion gives exactly our API twin
        prompt = json.loads(page.evaluate("async () => JSON.stringify((await window.app.graphToPrompt()).output)"))
        strip = lambda api: {k: {"inputs": v["inputs"], "class_type": v["class_type"]} for k, v in api.items()}  # noqa: E731
        assert strip(prompt) == strip(twin), (f"{name}: the frontend converts the UI graph to\n"
                                              f"{json.dumps(strip(prompt), sort_keys=True)}\nnot the API twin\n"
                                              f"{json.dumps(strip(twin), sort_keys=True)}")

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
        prompt = json.loads(page.evaluate("async () => JSON.stringify((await window.app.graphToPrompt()).output)"))
        assert strip(prompt) == strip(wanted), f"{name}: widget changes did not reach the prompt"

        # queue from the UI: the Run button
        page.locator('[data-testid="queue-button"]').first.click()
        page.wait_for_function("() => window.__cfa.events.length > 0", timeout=240_000)
        event = page.evaluate("() => window.__cfa.events[0]")
        page.screenshot(path=str(tmp_path / f"{name}-ran.png"))
        assert event["type"] == "execution_success", f"{name}: queued from the UI: {json.dumps(event)[:3000]}"
        prompt_id = event["detail"]["prompt_id"]
        status, hist = kit.http_json(f"{comfy_server.url}/history/{prompt_id}")
        assert status == 200 and prompt_id in hist, f"{name}: no history for {prompt_id}"
        result = kit.PromptResult(http_status=200, response=None, prompt_id=prompt_id, outcome="success",
                                  history=hist[prompt_id])
        graphs.check_example_outputs(name, kit.output_files(comfy_server, result), fx)
        report = _missing_node_report(page)
        assert not report["dialogs"], f"{name}: a dialog opened while running: {report['dialogs']}"
        assert not watch.problems, f"{name}: browser reported:\n" + "\n".join(watch.problems)
        print(f"\n[cfa] browser {name}: {time.time() - t0:.1f}s (screenshots in {tmp_path})")
    finally:
        page.close()


def test_browser_reports_missing_nodes(browser, comfy_server, pack_nodes, tmp_path):
    """The checks above can fail: a graph with an unknown node type is caught by them."""
    ui = wt.load_json(wt.EXAMPLES_DIR / f"{UI_NAMES[0]}.json")
    broken = json.loads(json.dumps(ui))
    victim = next(n for n in broken["nodes"] if n["type"].startswith("CFA_"))
    victim["type"] = "CFA_NodeThatDoesNotExist"
    page = browser.new_page()
    try:
        _open_ui(page, comfy_server)
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true, 'broken'); }", broken)
        page.wait_for_timeout(1000)
        report = _missing_node_report(page)
        page.screenshot(path=str(tmp_path / "missing-node.png"))
        assert "CFA_NodeThatDoesNotExist" in report["unregistered"], report
        assert any("CFA_NodeThatDoesNotExist" in d for d in report["dialogs"]), \
            f"no missing-node dialog naming the type: {report}"
    finally:
        page.close()

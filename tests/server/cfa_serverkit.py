"""Start a real ComfyUI server for tests, and talk to it (HTTP + websocket).

Standard library plus aiohttp (a ComfyUI requirement). Only ever connects to 127.0.0.1.
Used by tests/server/conftest.py and tests/workflows/build_examples.py.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
PACK_DIR_NAME = "ComfyUI-CrossFrameAttention"  # folder name of the pack inside custom_nodes/
REPO_ROOT = Path(__file__).resolve().parents[2]


def comfyui_path():
    """The ComfyUI checkout named by COMFYUI_PATH, or None (with the reason) when unusable."""
    p = os.environ.get("COMFYUI_PATH", "").strip()
    if not p:
        return None, "COMFYUI_PATH is not set"
    if not (Path(p) / "main.py").is_file():
        return None, f"COMFYUI_PATH={p} has no main.py"
    return Path(p).resolve(), ""


def frontend_root():
    """Opt-in: $CFA_FRONTEND_ROOT names a frontend build to serve instead of the one ComfyUI's requirements
    pin (passed as --front-end-root). For a comfyui-frontend-package wheel installed with
    ``pip install --target DIR comfyui-frontend-package==X`` it is DIR/comfyui_frontend_package/static.
    Returns the resolved folder or None; raises when the variable names no frontend build."""
    p = os.environ.get("CFA_FRONTEND_ROOT", "").strip()
    if not p:
        return None
    root = Path(p).expanduser().resolve()
    if not (root / "index.html").is_file():
        raise RuntimeError(f"CFA_FRONTEND_ROOT={p} has no index.html (for a wheel installed with --target DIR "
                           "use DIR/comfyui_frontend_package/static)")
    return root


def comfy_python():
    """Interpreter for ComfyUI and the fixture generator: $COMFYUI_PYTHON, else the one running the tests."""
    return os.environ.get("COMFYUI_PYTHON") or sys.executable


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_json(url, data=None, timeout=30.0):
    """GET (data None) or POST JSON; returns (status, parsed body or text)."""
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method="GET" if data is None else "POST",
                                 headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw.decode() or "null")
    except ValueError:
        return status, raw.decode(errors="replace")


def prepare_base_directory(base, repo_root=REPO_ROOT):
    """Make a ComfyUI --base-directory with the pack linked into its custom_nodes folder."""
    base = Path(base)
    for sub in ("models/checkpoints", "models/controlnet", "models/diffusion_models", "models/vae",
                "models/text_encoders", "input", "output", "temp", "user/default",
                "custom_nodes"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if not link.exists():
        link.symlink_to(Path(repo_root).resolve(), target_is_directory=True)
    # Keep the first-run UI quiet in the browser test: no tutorial pop-up, and the canvas navigation
    # settings pre-set (frontend 1.27 otherwise throws a TypeError while registering them on a new user).
    default = base / "user" / "default"
    for sub in ("workflows", "subgraphs"):
        (default / sub).mkdir(parents=True, exist_ok=True)
    (default / "user.css").touch()
    if not (default / "comfy.templates.json").exists():  # the node-templates store; 404s when absent
        (default / "comfy.templates.json").write_text("[]")
    settings = default / "comfy.settings.json"
    if not settings.exists():
        settings.write_text(json.dumps({
            "Comfy.TutorialCompleted": True,
            "Comfy.Canvas.NavigationMode": "legacy",
            "Comfy.Canvas.LeftMouseClickBehavior": "panning",
            "Comfy.Canvas.MouseWheelScroll": "zoom",
        }, indent=1))
    return base


@dataclass
class ComfyServer:
    comfy_path: Path
    base: Path
    port: int = 0
    extra_args: list = field(default_factory=list)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    startup_seconds: float = 0.0

    @property
    def url(self):
        return f"http://{HOST}:{self.port}"

    def start(self, timeout=180.0):
        self.port = self.port or free_port()
        self.log_path = Path(self.base) / f"comfyui-{self.port}.log"
        front = frontend_root()
        front_args = ["--front-end-root", str(front)] if front else []
        cmd = [comfy_python(), str(Path(self.comfy_path) / "main.py"), "--cpu",
               "--listen", HOST, "--port", str(self.port),
               "--base-directory", str(self.base),
               "--database-url", "sqlite:///:memory:",
               "--disable-auto-launch", "--disable-api-nodes",
               "--log-stdout", *front_args, *self.extra_args]
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)  # never let a repo root leak onto ComfyUI's path
        t0 = time.time()
        logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=str(self.comfy_path), stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        logf.close()
        deadline = t0 + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} during start-up:\n{self.log_tail()}")
            try:
                status, _ = http_json(self.url + "/system_stats", timeout=2)
                if status == 200:
                    self.startup_seconds = time.time() - t0
                    return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self):
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(p.pid, sig)  # the group this fixture started (start_new_session)
            except ProcessLookupError:
                return
            try:
                p.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, n=6000):
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except (OSError, AttributeError):
            return "(no log)"

    # --- API -------------------------------------------------------------------------------------
    def get(self, path, timeout=30.0):
        status, body = http_json(self.url + path, timeout=timeout)
        if status != 200:
            raise AssertionError(f"GET {path} -> {status}: {body}")
        return body

    def object_info(self):
        return self.get("/object_info", timeout=60)

    def run_prompt(self, prompt, timeout=300.0):
        """Queue an API prompt and wait on the websocket until it succeeds, fails or times out.

        Returns a PromptResult; never raises for a rejected or failed prompt (tests assert on it).
        Raises TimeoutError (after interrupting the server) when nothing final arrived in time.
        """
        return asyncio.run(_run_prompt(self, prompt, timeout))


@dataclass
class PromptResult:
    http_status: int
    response: object
    prompt_id: str | None = None
    outcome: str = "rejected"  # success | error | interrupted | rejected
    messages: list = field(default_factory=list)
    error: dict | None = None
    history: dict | None = None
    seconds: float = 0.0

    def describe(self):
        if self.outcome == "rejected":
            return f"rejected with HTTP {self.http_status}: {json.dumps(self.response)[:3000]}"
        if self.error:
            e = self.error
            return (f"{self.outcome}: node {e.get('node_id')} ({e.get('node_type')}): "
                    f"{e.get('exception_type')}: {e.get('exception_message')}\n"
                    + "".join(e.get("traceback") or [])[-3000:])
        return self.outcome

    def outputs(self):
        """{node_id: output dict} from /history."""
        return (self.history or {}).get("outputs", {})


async def _run_prompt(server, prompt, timeout):
    import aiohttp

    client_id = uuid.uuid4().hex
    t0 = time.time()
    ws_url = f"ws://{HOST}:{server.port}/ws?clientId={client_id}"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url, max_msg_size=0) as ws:
            async with session.post(server.url + "/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                status = r.status
                try:
                    body = await r.json(content_type=None)
                except ValueError:
                    body = await r.text()
            res = PromptResult(http_status=status, response=body)
            if status != 200 or not isinstance(body, dict) or "prompt_id" not in body:
                res.seconds = time.time() - t0
                return res
            res.prompt_id = pid = body["prompt_id"]
            deadline = t0 + timeout
            while True:
                left = deadline - time.time()
                if left <= 0:
                    await session.post(server.url + "/interrupt", json={"prompt_id": pid})
                    raise TimeoutError(f"prompt {pid} not finished after {timeout:.0f}s; messages: "
                                       f"{[m.get('type') for m in res.messages][-20:]}\n{server.log_tail()}")
                try:
                    msg = await ws.receive(timeout=min(left, 5.0))
                except asyncio.TimeoutError:
                    continue
                if msg.type == aiohttp.WSMsgType.BINARY:
                    continue  # previews
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"websocket closed ({msg.type}) while waiting for {pid}\n"
                                          f"{server.log_tail()}")
                data = json.loads(msg.data)
                d = data.get("data") or {}
                if d.get("prompt_id") != pid:
                    continue
                res.messages.append(data)
                typ = data.get("type")
                if typ == "execution_success":
                    res.outcome = "success"
                    break
                if typ == "execution_error":
                    res.outcome, res.error = "error", d
                    break
                if typ == "execution_interrupted":
                    res.outcome, res.error = "interrupted", d
                    break
    # the history entry is written when the prompt finishes; give it a moment
    for _ in range(40):
        st, hist = http_json(f"{server.url}/history/{res.prompt_id}")
        if st == 200 and isinstance(hist, dict) and res.prompt_id in hist:
            res.history = hist[res.prompt_id]
            break
        time.sleep(0.25)
    res.seconds = time.time() - t0
    return res


def output_files(server, result, kind=None):
    """Absolute paths of the files a prompt saved, from its /history outputs (images/videos/gifs)."""
    paths = []
    for node_out in result.outputs().values():
        for key, items in node_out.items():
            if kind and key != kind:
                continue
            if not isinstance(items, list):
                continue
            for it in items:
                if isinstance(it, dict) and "filename" in it:
                    folder = {"output": "output", "temp": "temp", "input": "input"}.get(it.get("type"), "output")
                    paths.append(Path(server.base) / folder / it.get("subfolder", "") / it["filename"])
    return paths


def copy_log(server, dest):
    try:
        shutil.copy(server.log_path, dest)
    except (OSError, TypeError):
        pass

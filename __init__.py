"""ComfyUI-CrossFrameAttention: temporally consistent video edits through cross-frame self-attention.

ComfyUI imports this folder as a module and calls `comfy_entrypoint` (V3 node API). What it runs lives in
`attention/` (the method, torch only) and `nodes/` (the ComfyUI nodes). `diffusers_pipelines/`, the other front
end over the same core, is never imported from here: the node pack does not need diffusers.
"""
from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]

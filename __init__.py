"""ComfyUI-CrossFrameAttention: temporally consistent video edits through cross-frame self-attention.

ComfyUI imports this folder as a module and calls `comfy_entrypoint` (V3 node API). Everything else lives in
`attention/` (the method, torch only) and `nodes/` (the ComfyUI nodes).
"""
from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]

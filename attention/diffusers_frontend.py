"""Deprecated: the old import path of the diffusers pipelines, kept for the 0.1 release only (remove in 0.2).

The pipelines and processors moved out of the core into their own package, `cross_frame_diffusers` (folder
diffusers_pipelines/), so that this package imports only torch. Importing this path warns once
(DeprecationWarning) and hands back the new modules themselves: `cross_frame_attention.diffusers_frontend.X` is
`cross_frame_diffusers.X` for each of the old submodules, so classes, isinstance checks and monkeypatches are
shared.

This file is the core's one import outside torch and the standard library, and only ever runs when someone
imports the old path (tests/unit/test_layering.py allows it here and nowhere else).
"""
from __future__ import annotations

import sys
import warnings

from cross_frame_diffusers import model_windows, pipeline, pipeline_sd, pipeline_sdxl, processor, video_loop

NEW_PACKAGE = "cross_frame_diffusers"
MOVED = {"model_windows": model_windows, "pipeline": pipeline, "pipeline_sd": pipeline_sd,
         "pipeline_sdxl": pipeline_sdxl, "processor": processor, "video_loop": video_loop}

# `from cross_frame_attention.diffusers_frontend.pipeline import X` finds the submodule here, already imported.
for _name, _module in MOVED.items():
    sys.modules[f"{__name__}.{_name}"] = _module

# stacklevel 2 is the importing line: warnings skips the import machinery's frames when it counts, so the warning
# names the user's import, and Python's default filter shows it when that import is in __main__.
warnings.warn(f"{__name__} is deprecated and will be removed in 0.2: import from {NEW_PACKAGE} instead "
              f"(e.g. `from {NEW_PACKAGE} import CrossFrameVideoPipeline`; the submodules keep their names, "
              f"`{__name__}.processor` is `{NEW_PACKAGE}.processor`).",
              DeprecationWarning, stacklevel=2)

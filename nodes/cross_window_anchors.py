"""Cross-Window Anchors: Wan sampled in core's context windows, each window's self-attention also attending to
the first latent frame (as window 0 saw it) and the previous window's last latent frame, at the same layer and
step, in one sampler pass (attention/window_anchors.py; Wan's way in: families/way_wan_windows.py)."""
from __future__ import annotations

import logging

from comfy.patcher_extension import WrappersMP
from comfy_api.latest import io

from ..attention.anchor_keeping import KEEP_CHOICES
from ..attention.errors import CrossFrameError
from ..attention.window_anchors import NAME, WINDOW_ANCHOR_CHOICES, WindowAnchors
from .families.way_wan_windows import WanWindowAttention, check_wan, install, installed
from .schema import CATEGORY, percent_inputs
from .windows import check_user_windows

log = logging.getLogger("CrossFrameAttention")
WRAPPER_KEY = "cross_window_anchors"


def check_windows(handler, who: str) -> bool:
    """Whether this run is sampled in context windows; refuse windows anchors cannot follow."""
    if handler is None:
        return False
    check_user_windows(handler, who, frame_dim=2, frames_along="Wan's latent frames lie along dimension 2 (WAN "
                       "Context Windows sets it)", needs="Anchors need the window holding frame 0 and each "
                       "window's previous window evaluated before it in the same step")
    return True


def sigma_bounds(model, start_percent: float, end_percent: float):
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise CrossFrameError(f"{NAME}: start_percent={start_percent} and end_percent={end_percent}: need "
                              "0 <= start_percent <= end_percent <= 1.")
    if start_percent <= 0.0 and end_percent >= 1.0:
        return None
    sampling = model.get_model_object("model_sampling")
    return float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent))


class CrossWindowAnchors(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CFA_CrossWindowAnchors",
            display_name=NAME,
            category=CATEGORY,
            description="For Wan 2.1 / 2.2 / VACE sampled in core's context windows (Context Windows (Manual) "
                        "or WAN Context Windows, schedule batched or standard_static): every window after the "
                        "first also attends to the clip's first latent frame and the previous window's last "
                        "latent frame, at the same layer and step, in one sampler pass. The first window is "
                        "sampled as without this node where windows do not overlap (overlapping windows blend "
                        "later, anchored windows back into it from the second step on).",
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1 / 2.2 or Wan VACE model, with or without its context "
                                                "windows node (either order)."),
                io.Combo.Input("anchors", options=list(WINDOW_ANCHOR_CHOICES), default="first+previous",
                               tooltip="What each later window's self-attention also attends to. first+previous: "
                                       "the clip's first latent frame and the previous window's last latent "
                                       "frame. first: only the first frame (appearance lock). previous: only "
                                       "the previous window's last frame (smooth seams, may drift)."),
                *percent_inputs("cross-window anchors"),
                io.Combo.Input("keep_anchors_on", options=list(KEEP_CHOICES), default="cpu", optional=True,
                               tooltip="Where the anchor frames wait between windows. cpu: pinned system memory, "
                                       "copied to the GPU one layer ahead, alongside the model's work (GPU "
                                       "memory stays near context windows alone). gpu: kept on the GPU, no "
                                       "copies (about 1 GiB more for Wan 1.3B at 480x832 with cfg, more for "
                                       "14B). The result is the same."),
            ],
            outputs=[io.Model.Output(display_name="model",
                                     tooltip="Sample with this model and a context-windows node.")],
        )

    @classmethod
    def execute(cls, model, anchors, start_percent, end_percent, keep_anchors_on="cpu") -> io.NodeOutput:
        check_wan(model.model, NAME)
        if installed(model.model_options) is not None:
            raise CrossFrameError(f"{NAME}: the MODEL input already carries cross-window anchors; use the node "
                                  "once (connect the model from before the first one).")
        state = WindowAnchors(anchors, NAME, sigma_bounds(model, start_percent, end_percent), keep_anchors_on)
        attention = WanWindowAttention(state, NAME)
        patched = model.clone()
        install(patched, attention)
        warned = []

        def outer_sample(executor, *args, **kwargs):
            guider = executor.class_obj
            check_wan(guider.model_patcher.model, NAME)
            if not check_windows(guider.model_options.get("context_handler"), NAME) and not warned:
                warned.append(True)
                log.warning("%s: the model is sampled without context windows, so there is no later window to "
                            "anchor: the result is plain sampling. Add Context Windows (Manual) or WAN Context "
                            "Windows to the model for anchors between windows (shown once per node).", NAME)
            state.reset()
            try:
                return executor(*args, **kwargs)
            finally:
                state.reset()   # nothing is kept between runs

        patched.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample)
        return io.NodeOutput(patched)

"""The diffusers pipelines' old import path, `cross_frame_attention.diffusers_frontend` (kept for one release,
attention/diffusers_frontend.py): it warns that it is deprecated, naming the new package, from the line that
imported it, and hands back the new package's own modules and classes. Also the new package's short names
(`from cross_frame_diffusers import CrossFrameVideoPipeline`), imported on first use."""
from __future__ import annotations

import sys
import warnings

import pytest

import needs_diffusers  # noqa: F401  (first: skips this module without the diffusers extra)

import cross_frame_diffusers  # noqa: E402
from cross_frame_diffusers import (model_windows, pipeline, pipeline_sd, pipeline_sdxl, processor,  # noqa: E402
                                   video_loop)

OLD = "cross_frame_attention.diffusers_frontend"
OLD_SUBMODULES = {"model_windows": model_windows, "pipeline": pipeline, "pipeline_sd": pipeline_sd,
                  "pipeline_sdxl": pipeline_sdxl, "processor": processor, "video_loop": video_loop}


@pytest.fixture
def old_path_not_imported():
    """Forget the old path, so that the next import runs the shim again (as a fresh process would)."""
    def forget():
        for name in [n for n in sys.modules if n == OLD or n.startswith(OLD + ".")]:
            del sys.modules[name]
    forget()
    yield
    forget()


def test_old_path_warns_from_the_importing_line(old_path_not_imported):
    with pytest.warns(DeprecationWarning, match="cross_frame_diffusers") as caught:
        from cross_frame_attention.diffusers_frontend.pipeline import CrossFrameVideoPipeline
    assert CrossFrameVideoPipeline is pipeline.CrossFrameVideoPipeline
    ours = [w for w in caught if issubclass(w.category, DeprecationWarning) and OLD in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    # The warning points at the import statement above, not into importlib or the shim: Python's default
    # filter shows a DeprecationWarning only when it is attributed to __main__, i.e. to the user's script.
    assert ours[0].filename == __file__


def test_old_path_hands_back_the_new_modules(old_path_not_imported):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import cross_frame_attention.diffusers_frontend as old
        from cross_frame_attention.diffusers_frontend.model_windows import HOOK_NAME, cut_rows
        from cross_frame_attention.diffusers_frontend.processor import CrossFrameAttnProcessor, install_processors
        from cross_frame_attention.diffusers_frontend.pipeline import (CrossFrameImg2ImgPipeline,
                                                                       CrossFrameVideoXLPipeline)
    for name, module in OLD_SUBMODULES.items():
        assert getattr(old, name) is module, name
        assert sys.modules[f"{OLD}.{name}"] is module, name
    assert (HOOK_NAME, cut_rows) == (model_windows.HOOK_NAME, model_windows.cut_rows)
    assert CrossFrameAttnProcessor is processor.CrossFrameAttnProcessor
    assert install_processors is processor.install_processors
    assert CrossFrameImg2ImgPipeline is pipeline.CrossFrameImg2ImgPipeline
    assert CrossFrameVideoXLPipeline is pipeline.CrossFrameVideoXLPipeline


def test_new_package_names_the_pipelines():
    for name in ("CrossFrameVideoPipeline", "CrossFrameImg2ImgPipeline", "CrossFrameVideoXLPipeline",
                 "timestep_bounds"):
        assert name in cross_frame_diffusers.__all__ and name in dir(cross_frame_diffusers)
        assert getattr(cross_frame_diffusers, name) is getattr(pipeline, name)
    with pytest.raises(AttributeError, match="CrossFrameNoSuchPipeline"):
        cross_frame_diffusers.CrossFrameNoSuchPipeline  # noqa: B018

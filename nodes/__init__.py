"""ComfyUI nodes of the pack (V3 schema). Imported only by ComfyUI, through the pack's __init__.py."""
from comfy_api.latest import ComfyExtension, io

from .batch_video_sampler import BatchVideoSampler
from .cross_frame_patch import CrossFrameAttentionPatch
from .cross_window_anchors import CrossWindowAnchors
from .flow_fusion import FlowGuidedFusion
from .measure_consistency import MeasureTemporalConsistency
from .source_flow import SourceFlow
from .store_reference import StoreReferenceAttention

NODE_LIST: list[type[io.ComfyNode]] = [StoreReferenceAttention, CrossFrameAttentionPatch, BatchVideoSampler,
                                       MeasureTemporalConsistency, SourceFlow, FlowGuidedFusion, CrossWindowAnchors]


class CrossFrameAttentionExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODE_LIST


async def comfy_entrypoint() -> CrossFrameAttentionExtension:
    return CrossFrameAttentionExtension()

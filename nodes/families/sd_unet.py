"""SD1.x, SD2.x and SDXL U-Nets (any ComfyUI): the fallback family, tried after every DiT declaration, whose
check refuses a model in which the attn1 patch would reach no self-attention (a DiT without a declaration)."""
from .base import Family
from .way_unet_attn1 import UNetAttn1Way

FAMILY = Family(
    name="SD U-Net",
    models="SD1.x, SD2.x and SDXL checkpoints (and their fine-tunes)",
    way=UNetAttn1Way(),
    block_lists={"input": "input_blocks", "middle": "middle_block", "output": "output_blocks"},
    presets=("output", "input", "middle", "input+middle", "input+output", "middle+output",
             "input+middle+output"),
    # The decoder: the method's classic choice (strong consistency, little structure change).
    default_blocks=lambda diffusion_model: frozenset({"output"}),
    default_text="output (the decoder)",
)

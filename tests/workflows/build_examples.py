"""Write example_workflows/*.json (UI format v0.4), their .jpg thumbnails and the API twins.

The graphs are defined once, below, by node type, input name and value; the layout of each node's
inputs and widgets_values is taken from a live ComfyUI's /object_info, so UI files and API twins come
out of one description and match the schemas of the code that is actually loaded.

    COMFYUI_PATH=~/ComfyUI python tests/workflows/build_examples.py            # starts a server itself
    python tests/workflows/build_examples.py --server http://127.0.0.1:8188      # or uses a running one

Re-run it after changing a node's inputs, then run the tests (tests/workflows checks the twins stay in
sync; tests/server checks everything against a live server and runs every workflow).

Generate them from the baseline ComfyUI (cfa_workflow_tools.BASELINE_COMFYUI, the oldest supported): a
file written for it opens in newer frontends, which append the optional widgets later versions added
(cfa_workflow_tools.ADDED_WIDGETS) with their defaults (the browser test checks it on each version).
Generated from a newer server, the widget layout and the API twins are still the baseline's (those
widgets are left out), but node outputs and default titles follow that server (0.30.0 adds outputs to
GetVideoComponents, SaveVideo and SaveImage and renames Canny's title), so the script says so.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import tomllib
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "server"))

import cfa_workflow_tools as wt  # noqa: E402

PACK_PREFIX = "CFA_"
CORE_CNR = "comfy-core"

NEGATIVE = "blurry, low quality, jpeg artifacts, watermark, text, deformed"


# --- a tiny graph description language ------------------------------------------------------------------

class Out:
    def __init__(self, node, slot):
        self.node, self.slot = node, slot


class Node:
    def __init__(self, graph, nid, type_, pos, title, inputs, size):
        self.graph, self.id, self.type, self.pos, self.title = graph, nid, type_, list(pos), title
        self.inputs, self.size = inputs, size

    def __getitem__(self, slot):
        if isinstance(slot, str):
            names = self.graph.info[self.type]["output_name"]
            slot = names.index(slot)
        return Out(self, slot)


class Graph:
    def __init__(self, name, title, info):
        self.name, self.title, self.info = name, title, info
        self.nodes, self.notes = [], []
        self._next = 1

    def add(self, type_, pos, title=None, size=None, **inputs):
        if type_ not in self.info:
            raise SystemExit(f"{self.name}: node type {type_} is not known to the server (is the pack loaded?)")
        node = Node(self, self._next, type_, pos, title, inputs, size)
        self._next += 1
        self.nodes.append(node)
        return node

    def note(self, text, pos, size=(380, 200), title=None):
        node = Node(self, self._next, "Note", pos, title, {"text": text}, size)
        self._next += 1
        self.notes.append(node)
        return node


# --- the examples ---------------------------------------------------------------------------------------

def _loaders(g, x=0, y=80, prompt="an oil painting, thick brush strokes, warm evening light, highly detailed"):
    ckpt = g.add("CheckpointLoaderSimple", (x, y), ckpt_name="v1-5-pruned-emaonly-fp16.safetensors")
    pos = g.add("CLIPTextEncode", (x + 380, y - 60), title="Positive prompt (the edit)", size=(400, 160),
                text=prompt, clip=ckpt["CLIP"])
    neg = g.add("CLIPTextEncode", (x + 380, y + 140), title="Negative prompt", size=(400, 130),
                text=NEGATIVE, clip=ckpt["CLIP"])
    return ckpt, pos, neg


def _video_in(g, ckpt, x=0, y=420):
    load = g.add("LoadVideo", (x, y), file="input_video.mp4", size=(320, 420))
    parts = g.add("GetVideoComponents", (x + 380, y + 320), video=load["VIDEO"])
    scale = g.add("ImageScale", (x + 380, y), title="Resize frames (512x512 for SD1.5)", image=parts["images"],
                  upscale_method="lanczos", width=512, height=512, crop="center")
    enc = g.add("VAEEncode", (x + 800, y + 200), pixels=scale["IMAGE"], vae=ckpt["VAE"])
    return parts, scale, enc


def _video_out(g, latent, ckpt, parts, x, y, prefix):
    dec = g.add("VAEDecode", (x, y), samples=latent, vae=ckpt["VAE"])
    vid = g.add("CreateVideo", (x, y + 120), images=dec["IMAGE"], fps=parts["fps"])
    g.add("SaveVideo", (x + 300, y), size=(420, 480), video=vid["VIDEO"], filename_prefix=prefix,
          format="auto", codec="auto")


def _fusion(g, ckpt, scale, x, y):
    """Source Flow on the resized frames, and Flow Guided Fusion of the checkpoint's model at its defaults."""
    flow = g.add("CFA_SourceFlow", (x, y), size=(320, 80), title="Source Flow (motion of the input)",
                 source=scale["IMAGE"])
    return g.add("CFA_FlowGuidedFusion", (x, y + 120), size=(340, 250), model=ckpt["MODEL"], flow=flow["flow"],
                 strength=0.75, start_percent=0.0, end_percent=1.0, anchor="previous", occlusion_threshold=1.0)


def _sampler(g, pos_xy, model, positive, negative, latent, **over):
    values = dict(seed=42, steps=20, cfg=7.0, sampler_name="euler", scheduler="normal", denoise=0.6,
                  frames_per_batch=0, anchors="first+previous", include_self=False, blocks="output",
                  start_percent=0.0, end_percent=1.0, bank_device="auto", output_state=False)
    values.update(over)
    return g.add("CFA_BatchVideoSampler", pos_xy, size=(340, 560), model=model, positive=positive,
                 negative=negative, latent_image=latent, **values)


def video_edit(info):
    g = Graph("video_edit", "Video edit with cross-frame attention", info)
    ckpt, pos, neg = _loaders(g)
    parts, scale, enc = _video_in(g, ckpt)
    bvs = _sampler(g, (1220, 80), ckpt["MODEL"], pos["CONDITIONING"], neg["CONDITIONING"], enc["LATENT"])
    _video_out(g, bvs["LATENT"], ckpt, parts, 1620, 80, "video/cfa_video_edit")
    g.note(
        "VIDEO EDIT WITH CROSS-FRAME ATTENTION\n\n"
        "1. Load Checkpoint: pick an SD1.5 checkpoint.\n"
        "2. Load Video: upload your clip (keep it short at first: 8-16 frames).\n"
        "3. Write the edit in the positive prompt.\n"
        "4. Resize: 512x512 suits SD1.5; any multiple of 8 works.\n"
        "5. Batch Video Sampler: denoise 0.5-0.7 keeps the motion and changes the look; higher changes "
        "more. Every frame attends to the first and the previous frame, so the edit stays consistent.\n"
        "   frames_per_batch 0 picks windows that fit in memory; any size gives the same result.\n"
        "Press Run: the video lands in output/video/.",
        (0, -400), size=(780, 300), title="Read me")
    return g


def video_edit_controlnet(info):
    g = Graph("video_edit_controlnet", "Video edit with cross-frame attention and ControlNet (canny)", info)
    ckpt, pos, neg = _loaders(g)
    parts, scale, enc = _video_in(g, ckpt)
    canny = g.add("Canny", (800, 420), image=scale["IMAGE"], low_threshold=0.4, high_threshold=0.8)
    cn = g.add("ControlNetLoader", (800, 600), control_net_name="control_v11p_sd15_canny_fp16.safetensors")
    apply = g.add("ControlNetApplyAdvanced", (1220, -220), size=(320, 230), positive=pos["CONDITIONING"],
                  negative=neg["CONDITIONING"], control_net=cn["CONTROL_NET"], image=canny["IMAGE"],
                  strength=0.8, start_percent=0.0, end_percent=1.0)
    bvs = _sampler(g, (1220, 120), ckpt["MODEL"], apply["positive"], apply["negative"], enc["LATENT"],
                   frames_per_batch=0)
    _video_out(g, bvs["LATENT"], ckpt, parts, 1620, 120, "video/cfa_video_edit_controlnet")
    g.note(
        "VIDEO EDIT + CONTROLNET (one canny hint per frame)\n\n"
        "As in the plain video edit, plus: Load ControlNet Model needs an SD1.5 ControlNet (canny here; "
        "depth or lineart work the same way with their preprocessor instead of Canny).\n"
        "Canny makes one edge image per frame; Apply ControlNet passes the whole batch, and Batch Video "
        "Sampler gives each frame its own hint, also when frames_per_batch splits the clip.\n"
        "Lower strength if the result looks too much like line art.",
        (0, -400), size=(780, 300), title="Read me")
    return g


def manual_store_load(info):
    g = Graph("manual_store_load", "Manual STORE / LOAD with any sampler", info)
    ckpt, pos, neg = _loaders(g)
    parts, scale, enc = _video_in(g, ckpt)
    first = g.add("LatentFromBatch", (1220, 420), title="First frame (the reference)", samples=enc["LATENT"],
                  batch_index=0, length=1)
    rest = g.add("LatentFromBatch", (1220, 600), title="The other frames", samples=enc["LATENT"],
                 batch_index=1, length=64)
    store = g.add("CFA_StoreReferenceAttention", (1220, 80), size=(320, 130), model=ckpt["MODEL"],
                  blocks="output", bank_device="auto", bank_dtype="auto")
    ks_a = g.add("KSampler", (1600, 80), title="KSampler (STORE: first frame)", size=(320, 270),
                 model=store["model"], positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                 latent_image=first["LATENT"], seed=42, steps=20, cfg=7.0, sampler_name="euler",
                 scheduler="normal", denoise=0.6)
    patch = g.add("CFA_CrossFrameAttentionPatch", (1600, 420), size=(320, 200), model=ckpt["MODEL"],
                  state=store["state"], reference_latent=ks_a["LATENT"], anchors="first+previous",
                  include_self=False, start_percent=0.0, end_percent=1.0)
    ks_b = g.add("KSampler", (1980, 420), title="KSampler (LOAD: other frames)", size=(320, 270),
                 model=patch["model"], positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                 latent_image=rest["LATENT"], seed=42, steps=20, cfg=7.0, sampler_name="euler",
                 scheduler="normal", denoise=0.6)
    join = g.add("LatentBatch", (1980, 80), title="Frames back in order", samples1=ks_a["LATENT"],
                 samples2=ks_b["LATENT"])
    _video_out(g, join["LATENT"], ckpt, parts, 2360, 80, "video/cfa_manual_store_load")
    g.note(
        "MANUAL STORE / LOAD (the seed method, with any sampler node)\n\n"
        "Store Reference Attention wraps the model: sampling ONE image with it (here the first frame) "
        "records its self-attention at every step.\n"
        "Cross-Frame Attention Patch wraps the model for the other frames: each one attends to the stored "
        "reference and to the frame before it. Its reference_latent input must come from the STORE "
        "sampler, so the reference runs first.\n"
        "Use the same checkpoint, size, steps, scheduler and denoise for both samplers.\n"
        "Batch Video Sampler does all of this in one node and is faster; this graph shows the parts "
        "(e.g. to use KSamplerAdvanced or SamplerCustom). Latent From Batch takes at most 64 frames.",
        (0, -400), size=(780, 300), title="Read me")
    return g


def image_reference(info):
    g = Graph("image_reference", "Single-image reference (style / identity)", info)
    ckpt, pos, neg = _loaders(g, prompt="the same person as a knight in shining armour, castle courtyard, "
                                        "oil painting")
    pos.title = "Prompt for the NEW image"
    ref_prompt = g.add("CLIPTextEncode", (380, 320), title="Prompt describing the REFERENCE", size=(400, 130),
                       text="a portrait photo of a person", clip=ckpt["CLIP"])
    img = g.add("LoadImage", (0, 480), size=(320, 400), image="reference.png")
    scale = g.add("ImageScale", (380, 500), image=img["IMAGE"], upscale_method="lanczos", width=512,
                  height=512, crop="center")
    enc = g.add("VAEEncode", (800, 500), pixels=scale["IMAGE"], vae=ckpt["VAE"])
    store = g.add("CFA_StoreReferenceAttention", (860, 80), size=(320, 130), model=ckpt["MODEL"],
                  blocks="output", bank_device="auto", bank_dtype="auto")
    ks_a = g.add("KSampler", (1240, 80), title="KSampler (STORE: the reference)", size=(320, 270),
                 model=store["model"], positive=ref_prompt["CONDITIONING"], negative=neg["CONDITIONING"],
                 latent_image=enc["LATENT"], seed=7, steps=20, cfg=7.0, sampler_name="euler",
                 scheduler="normal", denoise=0.75)
    patch = g.add("CFA_CrossFrameAttentionPatch", (1240, 420), size=(320, 200), model=ckpt["MODEL"],
                  state=store["state"], reference_latent=ks_a["LATENT"], anchors="first",
                  include_self=True, start_percent=0.0, end_percent=1.0)
    ks_b = g.add("KSampler", (1620, 420), title="KSampler (the new image)", size=(320, 270),
                 model=patch["model"], positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
                 latent_image=enc["LATENT"], seed=7, steps=20, cfg=7.0, sampler_name="euler",
                 scheduler="normal", denoise=0.75)
    dec = g.add("VAEDecode", (2000, 420), samples=ks_b["LATENT"], vae=ckpt["VAE"])
    g.add("SaveImage", (2220, 420), size=(400, 440), images=dec["IMAGE"], filename_prefix="cfa_image_reference")
    g.note(
        "SINGLE-IMAGE REFERENCE (style / identity transfer)\n\n"
        "Load Image: your reference. Describe it in the REFERENCE prompt, and write what you want in the "
        "NEW image prompt.\n"
        "The first KSampler records the reference's self-attention; the second samples the new image "
        "attending to the reference (anchors = first) and to itself (include_self = on), so it keeps the "
        "reference's look while following the new prompt.\n"
        "Both samplers need the same size, steps and scheduler, and the reference's denoise must be at least "
        "the new image's. Here the new image starts from the reference itself; connect another image's "
        "VAE Encode (same size) to the second KSampler to restyle that image instead.\n"
        "Lower end_percent (e.g. 0.6) for a looser resemblance.",
        (0, -430), size=(780, 330), title="Read me")
    return g


def compare_consistency(info):
    g = Graph("compare_consistency",
              "Compare: the same clip edited with and without cross-frame attention, and with fusion", info)
    ckpt, pos, neg = _loaders(g)
    parts, scale, enc = _video_in(g, ckpt)
    bvs = _sampler(g, (1220, 80), ckpt["MODEL"], pos["CONDITIONING"], neg["CONDITIONING"], enc["LATENT"])
    bvs.title = "Batch Video Sampler (WITH cross-frame attention)"
    ks = g.add("KSampler", (1220, 700), title="KSampler (WITHOUT: each frame on its own)", size=(340, 270),
               model=ckpt["MODEL"], positive=pos["CONDITIONING"], negative=neg["CONDITIONING"],
               latent_image=enc["LATENT"], seed=42, steps=20, cfg=7.0, sampler_name="euler",
               scheduler="normal", denoise=0.6)
    fusion = _fusion(g, ckpt, scale, 800, 1060)
    fused = _sampler(g, (1220, 1300), fusion["model"], pos["CONDITIONING"], neg["CONDITIONING"], enc["LATENT"])
    fused.title = "Batch Video Sampler (WITH attention + flow-guided fusion)"
    decoded = []
    for y, latent, label in ((80, bvs["LATENT"], "WITH cross-frame attention (Batch Video Sampler)"),
                             (700, ks["LATENT"], "WITHOUT (core KSampler, same noise)"),
                             (1300, fused["LATENT"], "WITH attention + flow-guided fusion")):
        dec = g.add("VAEDecode", (1620, y), samples=latent, vae=ckpt["VAE"])
        g.add("CFA_MeasureTemporalConsistency", (1860, y), size=(520, 500), images=dec["IMAGE"],
              source=scale["IMAGE"], occlusion_mask=True, label=label)
        decoded.append(dec)
    dec_with, dec_without, dec_fused = decoded
    stitch = g.add("ImageStitch", (2440, 80), title="Side by side: with | without", image1=dec_with["IMAGE"],
                   image2=dec_without["IMAGE"], direction="right", match_image_size=True, spacing_width=8,
                   spacing_color="black")
    stitch3 = g.add("ImageStitch", (2440, 340), title="... | fused", image1=stitch["IMAGE"],
                    image2=dec_fused["IMAGE"], direction="right", match_image_size=True, spacing_width=8,
                    spacing_color="black")
    vid = g.add("CreateVideo", (2440, 600), images=stitch3["IMAGE"], fps=parts["fps"])
    g.add("SaveVideo", (2440, 760), size=(420, 480), video=vid["VIDEO"], filename_prefix="video/cfa_compare",
          format="auto", codec="auto")
    g.note(
        "COMPARE: HOW MUCH DOES CROSS-FRAME ATTENTION STEADY YOUR CLIP?\n\n"
        "The same frames, prompt, seed and noise go through Batch Video Sampler (top, cross-frame attention), "
        "a core KSampler (middle, every frame on its own) and Batch Video Sampler with Flow Guided Fusion "
        "(bottom: attention plus each frame's prediction blended with the previous one along the input's "
        "motion). Each result is measured against the input frames by Measure Temporal Consistency:\n"
        "- warp error: what is left after each frame's predecessor is moved onto it along the input's motion "
        "(0-255 grey levels; lower = steadier). Compare each curve with the dashed source curve.\n"
        "- brightness flicker and colour drift: frame-to-frame jumps and slow wander of the look.\n"
        "The video shows the three results side by side (with | without | fused). Try other anchors, blocks, "
        "end_percent, fusion strength or denoise and watch the numbers.",
        (0, -400), size=(780, 320), title="Read me")
    return g


def video_edit_fusion(info):
    g = Graph("video_edit_fusion", "Video edit with cross-frame attention and flow-guided fusion", info)
    ckpt, pos, neg = _loaders(g)
    parts, scale, enc = _video_in(g, ckpt)
    fusion = _fusion(g, ckpt, scale, 800, 60)
    bvs = _sampler(g, (1220, 80), fusion["model"], pos["CONDITIONING"], neg["CONDITIONING"], enc["LATENT"])
    _video_out(g, bvs["LATENT"], ckpt, parts, 1620, 80, "video/cfa_video_edit_fusion")
    g.note(
        "VIDEO EDIT WITH CROSS-FRAME ATTENTION + FLOW-GUIDED FUSION (less flicker)\n\n"
        "As in the plain video edit, plus two nodes:\n"
        "- Source Flow measures the input clip's motion (optical flow, on the CPU, once per clip).\n"
        "- Flow Guided Fusion wraps the model: at every step, each frame's prediction is blended with the "
        "previous frame's, moved along that motion, wherever the motion is reliable (occluded or revealed "
        "pixels are left alone).\n"
        "strength 0.5-0.9: higher is steadier; lower lets new detail appear. end_percent below 1 lets the "
        "last steps re-sharpen. anchor previous+first also holds every frame to frame 0 (Rerender-A-Video).\n"
        "The resized frames must be the ones encoded (same count and size). Works with KSampler too.",
        (0, -400), size=(780, 300), title="Read me")
    return g


def flux_video_edit(info):
    """The video edit on Flux.1 [dev]: core's diffusion-model, text-encoder and VAE loaders, cfg 1 with
    FluxGuidance (Flux is guidance-distilled, so the negative is never evaluated: it is zeroed out)."""
    g = Graph("flux_video_edit", "Flux video edit with cross-frame attention", info)
    unet = g.add("UNETLoader", (0, 40), unet_name="flux1-dev.safetensors", weight_dtype="default")
    clip = g.add("DualCLIPLoader", (0, 200), clip_name1="clip_l.safetensors",
                 clip_name2="t5xxl_fp16.safetensors", type="flux")
    vae = g.add("VAELoader", (0, 380), vae_name="ae.safetensors")
    text = g.add("CLIPTextEncode", (380, -40), title="Positive prompt (the edit)", size=(400, 160),
                 text="an oil painting, thick brush strokes, warm evening light, highly detailed",
                 clip=clip["CLIP"])
    guided = g.add("FluxGuidance", (380, 170), conditioning=text["CONDITIONING"], guidance=3.5)
    negative = g.add("ConditioningZeroOut", (380, 300), title="Negative (unused at cfg 1)",
                     conditioning=text["CONDITIONING"])
    load = g.add("LoadVideo", (0, 520), file="input_video.mp4", size=(320, 420))
    parts = g.add("GetVideoComponents", (380, 840), video=load["VIDEO"])
    scale = g.add("ImageScale", (380, 520), title="Resize frames (1024x1024 suits Flux)", image=parts["images"],
                  upscale_method="lanczos", width=1024, height=1024, crop="center")
    enc = g.add("VAEEncode", (800, 620), pixels=scale["IMAGE"], vae=vae["VAE"])
    bvs = _sampler(g, (1220, 80), unet["MODEL"], guided["CONDITIONING"], negative["CONDITIONING"],
                   enc["LATENT"], cfg=1.0, scheduler="simple", denoise=0.75, blocks="auto")
    _video_out(g, bvs["LATENT"], {"VAE": vae["VAE"]}, parts, 1620, 80, "video/cfa_flux_video_edit")
    g.note(
        "FLUX VIDEO EDIT WITH CROSS-FRAME ATTENTION (ComfyUI 0.30.0 or newer)\n\n"
        "1. Load Diffusion Model: Flux.1 [dev] (or a fine-tune, Kontext too) in models/diffusion_models.\n"
        "   DualCLIPLoader: clip_l and t5xxl (type flux); Load VAE: Flux's ae.safetensors.\n"
        "2. Load Video: upload your clip (start with 8 frames).\n"
        "3. Write the edit in the prompt; FluxGuidance sets the distilled guidance (cfg stays 1).\n"
        "4. Batch Video Sampler: blocks auto = Flux's single blocks; denoise 0.6-0.8 keeps the motion. "
        "Each frame's image tokens also attend to the first and the previous frame's.\n"
        "   Out of memory? frames_per_batch 0 already picks windows that fit; lower it to force smaller ones.\n"
        "Press Run: the video lands in output/video/.",
        (0, -400), size=(780, 300), title="Read me")
    return g


def zimage_video_edit(info):
    """The video edit on Z-Image-Turbo: core's diffusion-model, text-encoder (Qwen3-4B, type lumina2) and VAE
    loaders, the model's own sampling shift (ModelSamplingAuraFlow 3), 8 steps at cfg 1 (Turbo is distilled,
    so the negative is never evaluated: it is zeroed out). Cross-frame attention reaches Z-Image through
    ComfyUI's attention override (nodes/families/zimage.py)."""
    g = Graph("zimage_video_edit", "Z-Image video edit with cross-frame attention", info)
    unet = g.add("UNETLoader", (0, 40), unet_name="z_image_turbo_bf16.safetensors", weight_dtype="default")
    shift = g.add("ModelSamplingAuraFlow", (0, -100), model=unet["MODEL"], shift=3.0)
    clip = g.add("CLIPLoader", (0, 200), clip_name="qwen_3_4b.safetensors", type="lumina2", device="default")
    vae = g.add("VAELoader", (0, 380), vae_name="ae.safetensors")
    text = g.add("CLIPTextEncode", (380, -40), title="Positive prompt (the edit)", size=(400, 160),
                 text="an oil painting, thick brush strokes, warm evening light, highly detailed",
                 clip=clip["CLIP"])
    negative = g.add("ConditioningZeroOut", (380, 200), title="Negative (unused at cfg 1)",
                     conditioning=text["CONDITIONING"])
    load = g.add("LoadVideo", (0, 520), file="input_video.mp4", size=(320, 420))
    parts = g.add("GetVideoComponents", (380, 840), video=load["VIDEO"])
    scale = g.add("ImageScale", (380, 520), title="Resize frames (1024x1024 suits Z-Image)",
                  image=parts["images"], upscale_method="lanczos", width=1024, height=1024, crop="center")
    enc = g.add("VAEEncode", (800, 620), pixels=scale["IMAGE"], vae=vae["VAE"])
    bvs = _sampler(g, (1220, 80), shift["MODEL"], text["CONDITIONING"], negative["CONDITIONING"],
                   enc["LATENT"], steps=8, cfg=1.0, sampler_name="res_multistep", scheduler="simple",
                   denoise=0.7, blocks="auto")
    _video_out(g, bvs["LATENT"], {"VAE": vae["VAE"]}, parts, 1620, 80, "video/cfa_zimage_video_edit")
    g.note(
        "Z-IMAGE VIDEO EDIT WITH CROSS-FRAME ATTENTION (ComfyUI 0.30.0 or newer)\n\n"
        "1. Load Diffusion Model: Z-Image-Turbo in models/diffusion_models. Load CLIP: qwen_3_4b (type "
        "lumina2); Load VAE: ae.safetensors (Flux's).\n"
        "2. Load Video: upload your clip (start with 8 frames).\n"
        "3. Write the edit in the prompt; Turbo runs 8 steps at cfg 1.\n"
        "4. Batch Video Sampler: blocks auto = the second half of Z-Image's main layers; denoise 0.6-0.8 keeps "
        "the motion. The pack wraps ComfyUI's attention override: put other attention-override nodes "
        "before (upstream of) it.\n"
        "Press Run: the video lands in output/video/.",
        (0, -400), size=(780, 300), title="Read me")
    return g


# The Wan example's windows, in video frames as WAN Context Windows takes them: 33 frames = 9 latent frames
# ((33 - 1) / 4 + 1), overlap 16 = 4 latent frames (a multiple of 4 converts the same on 0.3.64 and 0.30.0).
WAN_WINDOW, WAN_OVERLAP, WAN_TEMPORAL = 33, 16, 4


def wan_long_video(info):
    """A long Wan 2.1 text-to-video clip in core's context windows (WAN Context Windows, standard_static: a
    schedule Cross-Window Anchors accepts), every later window anchored on the first frame and the previous
    window's last frame, measured with the windows' joins marked."""
    g = Graph("wan_long_video", "Long Wan 2.1 video in context windows with cross-window anchors", info)
    unet = g.add("UNETLoader", (0, 40), unet_name="wan2.1_t2v_1.3B_fp16.safetensors", weight_dtype="default")
    shift = g.add("ModelSamplingSD3", (0, 200), model=unet["MODEL"], shift=8.0)
    windows = g.add("WanContextWindowsManual", (380, 420), size=(340, 250), model=shift["MODEL"],
                    context_length=WAN_WINDOW, context_overlap=WAN_OVERLAP, context_schedule="standard_static",
                    context_stride=1, closed_loop=False, fuse_method="pyramid")
    anchors = g.add("CFA_CrossWindowAnchors", (800, 420), size=(340, 154), model=windows["MODEL"],
                    anchors="first+previous", start_percent=0.0, end_percent=1.0, keep_anchors_on="cpu")
    clip = g.add("CLIPLoader", (0, 320), clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan",
                 device="default")
    vae = g.add("VAELoader", (0, 700), vae_name="wan_2.1_vae.safetensors")
    pos = g.add("CLIPTextEncode", (380, -60), title="Positive prompt", size=(400, 160),
                text="a red fox trotting through a snowy birch forest at dawn, soft golden light, tracking shot",
                clip=clip["CLIP"])
    neg = g.add("CLIPTextEncode", (380, 140), title="Negative prompt", size=(400, 130), text=NEGATIVE,
                clip=clip["CLIP"])
    latent = g.add("EmptyHunyuanLatentVideo", (380, 700), title="Empty video latent (81 frames)", width=832,
                   height=480, length=81, batch_size=1)
    ks = g.add("KSampler", (1220, 80), size=(340, 270), model=anchors["model"], positive=pos["CONDITIONING"],
               negative=neg["CONDITIONING"], latent_image=latent["LATENT"], seed=42, steps=30, cfg=6.0,
               sampler_name="uni_pc", scheduler="simple", denoise=1.0)
    dec = g.add("VAEDecode", (1620, 80), samples=ks["LATENT"], vae=vae["VAE"])
    vid = g.add("CreateVideo", (1620, 200), images=dec["IMAGE"], fps=16.0)
    g.add("SaveVideo", (1920, 80), size=(420, 480), video=vid["VIDEO"], filename_prefix="video/cfa_wan_long_video",
          format="auto", codec="auto")
    g.add("CFA_MeasureTemporalConsistency", (1620, 620), size=(520, 560), images=dec["IMAGE"],
          occlusion_mask=True, label="Wan in context windows, with cross-window anchors",
          window_length=(WAN_WINDOW - 1) // WAN_TEMPORAL + 1, window_overlap=WAN_OVERLAP // WAN_TEMPORAL,
          window_schedule="standard_static", latent_temporal_scale=WAN_TEMPORAL)
    g.note(
        "LONG WAN 2.1 VIDEO: CONTEXT WINDOWS + CROSS-WINDOW ANCHORS\n\n"
        "1. Load Diffusion Model: wan2.1_t2v_1.3B (or 14B) in models/diffusion_models. Load CLIP: umt5_xxl "
        "(type wan); Load VAE: wan_2.1_vae.\n"
        "2. WAN Context Windows samples the 81 frames in windows of 33 frames overlapping by 16 (9 and 4 latent "
        "frames). Keep the schedule standard_static (or batched): Cross-Window Anchors refuses the uniform "
        "and looped ones. On ComfyUI 0.30.0 the node also shows freenoise (on by default), retain_first_frame "
        "and split_conds_to_windows.\n"
        "3. Cross-Window Anchors: every window after the first also attends to the clip's first latent frame "
        "and the previous window's last one, so the windows keep one look. The first window's own attention is "
        "left alone, but these windows overlap: from the second step on, the blend brings the anchored next "
        "window back into its last frames. Bypass the node to compare.\n"
        "4. Measure Temporal Consistency marks the window joins: its window_length 9 / window_overlap 4 are the "
        "windows in latent frames, latent_temporal_scale 4 is Wan's. Change them with the windows.\n"
        "Press Run: the video lands in output/video/.",
        (0, -430), size=(780, 340), title="Read me")
    return g


EXAMPLES = [video_edit, video_edit_controlnet, manual_store_load, image_reference, compare_consistency,
            flux_video_edit, zimage_video_edit, video_edit_fusion, wan_long_video]


# --- serialisation ----------------------------------------------------------------------------------------

def _widget_type(spec):
    # a DynamicCombo is written as the plain combo the baseline has (only options without inputs are used)
    t = wt.spec_type(spec)
    return "COMBO" if t == wt.DYNAMIC_COMBO else t


def _node_size(node, node_def, skip=()):
    if node.size:
        return list(node.size)
    sockets = len(wt.socket_inputs(node_def)) if node_def else 0
    outs = len(node_def.get("output", [])) if node_def else 0
    widgets = len(wt.widget_slots(node_def, skip)) if node_def else 1
    return [320, 46 + 22 * max(sockets, outs) + 26 * widgets]


def build(graph, versions):
    info = graph.info
    links, link_id = [], 0
    ui_nodes, api = [], {}
    incoming = {}  # node id -> {input name: link id}
    out_links = {}  # (node id, slot) -> [link ids]
    order = _topological(graph.nodes)

    for node in graph.nodes:
        node_def = info[node.type]
        skip = wt.skipped_for(node.type, versions["comfy"])
        names = {n for n, _, _ in wt.ordered_inputs(node_def, skip)}
        unknown = set(node.inputs) - names
        if unknown:
            raise SystemExit(f"{graph.name}: {node.type} has no input(s) {sorted(unknown)}"
                             + (f" in the baseline layout (ComfyUI {wt.BASELINE_COMFYUI})" if set(skip) & unknown else ""))
        for name, spec, optional in wt.ordered_inputs(node_def, skip):
            value = node.inputs.get(name)
            if isinstance(value, Out):
                link_id += 1
                src_def = info[value.node.type]
                ltype = src_def["output"][value.slot]
                links.append([link_id, value.node.id, value.slot, node.id, None, ltype])
                incoming.setdefault(node.id, {})[name] = link_id
                out_links.setdefault((value.node.id, value.slot), []).append(link_id)

    target_slot = {}
    for node in graph.nodes:
        node_def = info[node.type]
        skip = wt.skipped_for(node.type, versions["comfy"])
        inputs_ui, widgets_values, api_inputs = [], [], {}
        sockets = [(n, s, o) for n, s, o in wt.ordered_inputs(node_def, skip) if not wt.is_widget(s)]
        widgets = [(n, s, o) for n, s, o in wt.ordered_inputs(node_def, skip) if wt.is_widget(s)]
        for name, spec, optional in sockets:
            lid = incoming.get(node.id, {}).get(name)
            entry = {"localized_name": name, "name": name}
            if optional:
                entry["shape"] = 7
            entry.update({"type": wt.spec_type(spec), "link": lid})
            if lid is not None:
                target_slot[lid] = len(inputs_ui)
            elif not optional:
                raise SystemExit(f"{graph.name}: {node.type} input {name} is not connected")
            inputs_ui.append(entry)
        for name, spec, optional in widgets:
            lid = incoming.get(node.id, {}).get(name)
            value = node.inputs.get(name)
            if isinstance(value, Out) or value is None:
                value = wt.spec_opts(spec).get("default")
                if value is None and wt.spec_type(spec) == "COMBO":
                    value = (wt.combo_options(spec) or [""])[0]
            nested = wt.dynamic_option_inputs(spec, value)
            if nested:
                raise SystemExit(f"{graph.name}: {node.type}.{name}={value!r} selects a DynamicCombo option with "
                                 f"inputs {nested}; the builder writes only options without inputs")
            if lid is not None:
                target_slot[lid] = len(inputs_ui)
            inputs_ui.append({"localized_name": name, "name": name, "type": _widget_type(spec),
                              "widget": {"name": name}, "link": lid})
            widgets_values.append(value)
            if wt.spec_opts(spec).get("control_after_generate"):
                widgets_values.append("fixed")
            if wt.upload_flag(spec):
                inputs_ui.append({"localized_name": "choose file to upload", "name": "upload",
                                  "type": "IMAGEUPLOAD", "widget": {"name": "upload"}, "link": None})
                widgets_values.append("image")
        for name, spec, optional in wt.ordered_inputs(node_def, skip):
            value = node.inputs.get(name)
            if isinstance(value, Out):
                api_inputs[name] = [str(value.node.id), value.slot]
            elif wt.is_widget(spec):
                idx = [n for n, _, _ in widgets].index(name)
                api_inputs[name] = _api_value(widgets_values, widgets, idx)
        outputs_ui = []
        for slot, (otype, oname) in enumerate(zip(node_def.get("output", []), node_def.get("output_name", []))):
            outputs_ui.append({"localized_name": oname, "name": oname, "type": otype,
                               "links": out_links.get((node.id, slot))})
        is_ours = node.type.startswith(PACK_PREFIX)
        ui = {"id": node.id, "type": node.type, "pos": node.pos, "size": _node_size(node, node_def, skip),
              "flags": {}, "order": order[node.id], "mode": 0, "inputs": inputs_ui, "outputs": outputs_ui,
              "properties": {"cnr_id": versions["pack_id"] if is_ours else CORE_CNR,
                             "ver": versions["pack"] if is_ours else versions["comfy"],
                             "Node name for S&R": node.type},
              "widgets_values": widgets_values}
        if node.title:
            ui["title"] = node.title
        ui_nodes.append(ui)
        api_inputs.update(wt.required_additions(node.type))   # a later ComfyUI requires them; older ones ignore
        api[str(node.id)] = {"inputs": api_inputs, "class_type": node.type,
                             "_meta": {"title": node.title or node_def.get("display_name") or node.type}}

    for link in links:
        link[4] = target_slot[link[0]]
    n_real = len(graph.nodes)
    for k, note in enumerate(graph.notes):
        ui_nodes.append({"id": note.id, "type": "Note", "pos": note.pos, "size": list(note.size), "flags": {},
                         "order": n_real + k, "mode": 0, "inputs": [], "outputs": [], "title": note.title or "Note",
                         "properties": {}, "widgets_values": [note.inputs["text"]],
                         "color": "#432", "bgcolor": "#653"})
    all_ids = [n["id"] for n in ui_nodes]
    workflow = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-crossframeattention/" + graph.name)),
        "revision": 0,
        "last_node_id": max(all_ids),
        "last_link_id": link_id,
        "nodes": ui_nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.75, "offset": [80, 470]}},
        "version": 0.4,
    }
    return workflow, api


def _api_value(widgets_values, widgets, idx):
    # walk widgets_values with the same extras rule as build() used to write them
    k = 0
    for i, (name, spec, _) in enumerate(widgets):
        if i == idx:
            return widgets_values[k]
        k += 1
        if wt.spec_opts(spec).get("control_after_generate"):
            k += 1
        if wt.upload_flag(spec):
            k += 1
    raise IndexError(idx)


def _topological(nodes):
    deps = {n.id: {v.node.id for v in n.inputs.values() if isinstance(v, Out)} for n in nodes}
    order, done = {}, set()
    while len(done) < len(nodes):
        ready = sorted(i for i, d in deps.items() if i not in done and d <= done)
        if not ready:
            raise SystemExit("cycle in graph")
        for i in ready:
            order[i] = len(order)
            done.add(i)
    return order


# --- thumbnails -----------------------------------------------------------------------------------------

# (title, subtitle, accent colour, what the boxes are: "frame", "window", or "reference" for one reference
# box and one new image)
THUMB_STYLE = {
    "video_edit": ("Video edit", "first + previous frame", (52, 101, 164), "frame"),
    "video_edit_controlnet": ("Video edit + ControlNet", "one canny hint per frame", (117, 80, 123), "frame"),
    "manual_store_load": ("Manual STORE / LOAD", "any sampler node", (78, 154, 6), "frame"),
    "image_reference": ("Image reference", "style / identity transfer", (196, 160, 0), "reference"),
    "compare_consistency": ("Compare: with / without", "measured temporal consistency", (204, 73, 91), "frame"),
    "flux_video_edit": ("Flux video edit", "DiT: image tokens attend across frames", (206, 92, 0), "frame"),
    "zimage_video_edit": ("Z-Image video edit", "through the attention override", (112, 84, 178), "frame"),
    "video_edit_fusion": ("Video edit + fusion", "flow-guided latent fusion", (32, 140, 140), "frame"),
    "wan_long_video": ("Wan long video", "anchors across context windows", (60, 150, 90), "window"),
}


def thumbnail(name, path):
    """A simple title card: a strip of frames with arrows from the anchors."""
    from PIL import Image, ImageDraw, ImageFont

    title, subtitle, accent, unit = THUMB_STYLE[name]
    w, h = 512, 512
    img = Image.new("RGB", (w, h), (28, 30, 36))
    d = ImageDraw.Draw(img)
    try:
        big, small = ImageFont.load_default(size=38), ImageFont.load_default(size=24)
    except TypeError:  # Pillow without FreeType sizes
        big = small = ImageFont.load_default()
    d.rectangle([0, 0, w, 10], fill=accent)
    d.text((32, 40), "Cross-Frame Attention", font=small, fill=(170, 175, 185))
    d.text((32, 78), title, font=big, fill=(240, 240, 240))
    d.text((32, 130), subtitle, font=small, fill=accent)
    n = 1 if unit == "reference" else 4
    if n == 1:
        boxes = [(70, 270, 210, 410), (300, 270, 440, 410)]
        labels = ["reference", "new image"]
    else:
        boxes = [(32 + i * 120, 290, 32 + i * 120 + 96, 386) for i in range(4)]
        labels = [f"{unit} {i}" for i in range(4)]
    for i, (box, label) in enumerate(zip(boxes, labels)):
        fill = tuple(int(c * (0.55 + 0.45 * (i == 0))) for c in accent)
        d.rounded_rectangle(box, radius=10, fill=fill, outline=(230, 230, 230), width=2)
        cx = (box[0] + box[2]) // 2
        side = (box[2] - box[0]) // 4
        off = (i * 9) % 30 - 12
        d.ellipse([cx - side // 2 + off, (box[1] + box[3]) // 2 - side // 2,
                   cx + side // 2 + off, (box[1] + box[3]) // 2 + side // 2], fill=(245, 215, 90))
        d.text((box[0], box[3] + 12), label, font=small, fill=(200, 200, 200))
    first = boxes[0]
    for i, box in enumerate(boxes[1:], start=1):
        # arc from the anchor (frame 0 / reference) over the top, and from the previous frame
        x0, x1 = (first[0] + first[2]) // 2, (box[0] + box[2]) // 2
        d.arc([x0, first[1] - 45 - 8 * i, x1, first[1] + 45], 200, 340, fill=(235, 235, 235), width=3)
        if n > 1 and i > 1:
            prev = boxes[i - 1]
            d.line([prev[2] + 4, (prev[1] + prev[3]) // 2, box[0] - 4, (box[1] + box[3]) // 2],
                   fill=accent, width=4)
    d.text((32, 468), "K/V from the anchors at every step", font=small, fill=(150, 155, 165))
    img.save(path, "JPEG", quality=85, optimize=True)


# --- main ---------------------------------------------------------------------------------------------------

def _versions(info_source):
    with open(wt.REPO_ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return {"pack_id": project["name"], "pack": project["version"], "comfy": info_source}


def write_all(object_info, comfy_version, out_dir=wt.EXAMPLES_DIR):
    versions = _versions(comfy_version)
    api_dir = Path(out_dir) / "api"
    api_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for make in EXAMPLES:
        graph = make(object_info)
        ui, api = build(graph, versions)
        problems = wt.structure_problems(ui, object_info, graph.name, comfy_version)
        problems += wt.added_widget_problems(object_info, comfy_version, {n.type for n in graph.nodes})
        converted, conv_problems = wt.ui_to_api(ui, object_info, comfy_version)
        expected = {k: {"inputs": v["inputs"], "class_type": v["class_type"]} for k, v in api.items()}
        if problems or conv_problems or converted != expected:
            raise SystemExit(f"{graph.name}: generated graph does not check out: {problems + conv_problems}")
        (Path(out_dir) / f"{graph.name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        (api_dir / f"{graph.name}.json").write_text(json.dumps(api, indent=2) + "\n")
        thumbnail(graph.name, Path(out_dir) / f"{graph.name}.jpg")
        written.append(graph.name)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", help="URL of a running ComfyUI with this pack loaded (127.0.0.1 only)")
    a = ap.parse_args(argv)
    import cfa_serverkit as kit
    if a.server:
        if not a.server.startswith(f"http://{kit.HOST}:"):
            raise SystemExit(f"--server must be http://{kit.HOST}:<port>")
        _, info = kit.http_json(a.server + "/object_info", timeout=60)
        _, stats = kit.http_json(a.server + "/system_stats")
    else:
        path, why = kit.comfyui_path()
        if path is None:
            raise SystemExit(f"{why}: set COMFYUI_PATH or pass --server")
        with tempfile.TemporaryDirectory() as tmp:
            kit.prepare_base_directory(tmp)
            server = kit.ComfyServer(path, Path(tmp)).start()
            try:
                info, stats = server.object_info(), server.get("/system_stats")
            finally:
                server.stop()
    version = stats.get("system", {}).get("comfyui_version", "unknown")
    if version != wt.BASELINE_COMFYUI:
        print(f"note: generated from ComfyUI {version}, not the baseline {wt.BASELINE_COMFYUI}: widget layout "
              "and API twins are the baseline's, node outputs and default titles are this server's")
    written = write_all(info, version)
    print("wrote", ", ".join(written), "into", wt.EXAMPLES_DIR)


if __name__ == "__main__":
    main()

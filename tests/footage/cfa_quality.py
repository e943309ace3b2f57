"""Edits of held-out real clips with the trained small model, through the pack's ComfyUI nodes, and their
scores: what the quality table (benchmarks/quality/quality_table.py) and its CI test
(tests/comfy/test_trained_quality.py) share.

An edit is img2img of every frame at some denoise, unconditional (the model's empty context), cfg 1, euler, the
same seed for every setting. Without the pack that is one KSampler over the latent batch: each frame gets its
own noise. The scores: Measure Temporal Consistency's warp error and brightness flicker (the flow is the
source clip's), fidelity: PSNR and SSIM against the source frames and against the plain edit, and detail (mean
absolute Laplacian), so that no setting can win by freezing or blurring the clip.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import torch

import cfa_checkout
import cfa_footage
import cfa_trained_model

HELD_OUT = ("carphone", "vtest", "tree")
SIZE = {"carphone": (176, 144), "vtest": (192, 144), "tree": (192, 144)}   # width, height
SAMPLING = dict(seed=7, cfg=1.0, sampler_name="euler", scheduler="normal")

# name -> (what a user does, Batch Video Sampler overrides or None for plain KSampler, fusion overrides or None)
SETTINGS = {
    "plain": ("KSampler over the batch (no pack)", None, None),
    "bvs": ("Batch Video Sampler, defaults", {}, None),
    "bvs_fusion": ("+ Flow Guided Fusion, defaults", {}, {}),
    "bvs_keyframes": ("+ keyframes every 8 frames", {"anchor_every": 8}, None),
    "bvs_windows8": ("windows of 8 frames", {"frames_per_batch": 8}, None),
    "plain_fusion": ("KSampler + Flow Guided Fusion", None, {}),
}


def held_out_clip(name: str, frames: int) -> np.ndarray:
    """The first `frames` frames of a held-out clip at its table size, uint8 RGB."""
    if name in cfa_footage.CLIPS:
        clip = cfa_footage.decode(name, max_frames=frames)
    else:
        capture = cv2.VideoCapture(str(cfa_footage.opencv_doc_clip(name)))
        clip = []
        while len(clip) < frames:
            ok, bgr = capture.read()
            if not ok:
                break
            clip.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        capture.release()
        clip = np.stack(clip)
    return np.stack([cv2.resize(f, SIZE[name], interpolation=cv2.INTER_AREA) for f in clip[:frames]])


def schema_defaults(node) -> dict:
    return {i.id: i.default for i in node.define_schema().inputs if getattr(i, "default", None) is not None}


def to_image(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).float() / 255.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def edit(comfy_nodes, mapping, model, vae, frames: np.ndarray, setting: str, denoise: float, steps: int,
         sampler_overrides: dict | None = None, fusion_overrides: dict | None = None) -> tuple[np.ndarray, float]:
    """The decoded edit of `frames` with one setting, and the seconds its sampling took."""
    _, bvs, fusion = SETTINGS[setting]
    bvs = None if bvs is None else {**bvs, **(sampler_overrides or {})}
    fusion = None if fusion is None else {**fusion, **(fusion_overrides or {})}
    positive, negative = cfa_trained_model.unconditional()
    latent = {"samples": vae.encode(to_image(frames))}
    if fusion is not None:
        node = mapping["CFA_FlowGuidedFusion"]
        options = {**schema_defaults(node), **fusion}
        model = node.execute(model, options["strength"], options["start_percent"], options["end_percent"],
                             options["anchor"], options["occlusion_threshold"], source=to_image(frames)).args[0]
    start = time.perf_counter()
    if bvs is None:
        out = comfy_nodes.KSampler().sample(model, SAMPLING["seed"], steps, SAMPLING["cfg"], SAMPLING["sampler_name"],
                                            SAMPLING["scheduler"], positive, negative, latent, denoise)[0]
    else:
        node = mapping["CFA_BatchVideoSampler"]
        kwargs = {**schema_defaults(node), **SAMPLING, "steps": steps, "denoise": denoise, **bvs}
        out = node.execute(model=model, positive=positive, negative=negative, latent_image=latent,
                           **kwargs).args[0]
    seconds = time.perf_counter() - start
    return to_uint8(vae.decode(out["samples"])), seconds


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over frames and channels (Gaussian window 11, sigma 1.5, the usual constants)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for fa, fb in zip(a.astype(np.float64), b.astype(np.float64)):
        blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
        mu_a, mu_b = blur(fa), blur(fb)
        var_a, var_b, cov = blur(fa * fa) - mu_a ** 2, blur(fb * fb) - mu_b ** 2, blur(fa * fb) - mu_a * mu_b
        values.append(np.mean(((2 * mu_a * mu_b + c1) * (2 * cov + c2))
                              / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))))
    return float(np.mean(values))


def detail(frames: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey frames: falls when a clip is blurred (PSNR can rise then)."""
    return float(np.mean([np.abs(cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float64), cv2.CV_64F,
                                               ksize=3)).mean() for f in frames]))


def score(result: np.ndarray, source: np.ndarray, plain: np.ndarray | None) -> dict:
    measure = cfa_checkout.load_consistency()
    report = measure.measure_consistency(result, source=source).summary()
    out = {"warp_error": report["result"]["warp_error_mean"], "flicker": report["result"]["flicker_mean"],
           "source_warp_error": report["source"]["warp_error_mean"],
           "psnr_source": psnr(result, source), "ssim_source": ssim(result, source),
           "detail": detail(result), "source_detail": detail(source)}
    if plain is not None:
        out.update(psnr_plain=psnr(result, plain), ssim_plain=ssim(result, plain))
    return out

"""Benchmark of the nodes on DiTs inside ComfyUI 0.30.0: time and peak GPU memory of a whole clip sampled

  - plain: ComfyUI's own sampler (what KSampler runs), no cross-frame attention -- the baseline;
  - floor_cat: the chosen blocks attend over [txt; img; txt; img] (keys doubled with no gathering, pe doubled):
    the method's own floor at this patch point;
  - batch: Batch Video Sampler, whole clip in one batch (the fast path);
  - chunked: Batch Video Sampler with frames_per_batch = --chunk (windows of that many frames in one pass);
  - frame_by_frame: Batch Video Sampler with frames_per_batch = 1: one frame per model call, in clip order
    inside each step (windows of one frame; nothing stored across steps).

Random weights (std 1/sqrt(fan_in), drawn on the GPU) in the shape of the real checkpoint; nothing is
downloaded. Every number of one invocation comes from the same process on the same GPU; ratios are against
`plain` of that run. Each scheme runs once untimed with 2 steps (kernels, allocator), then --repeats times.

  COMFYUI_PATH=$HOME/.cache/cfa/ComfyUI-0.30.0 python benchmarks/dit_gpu_bench.py --shape flux1 \
      --frames 8 --steps 20 --json flux1.json
  (--shape qwen for Qwen-Image, chroma, zimage for Z-Image-Turbo; --shape tiny --cpu is a smoke run anywhere)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_gpu_bench import against_plain, build_comfy_model, measure, setup_comfy, write_report  # noqa: E402

SHAPES = {
    # Flux.1-dev: 19 double + 38 single blocks, 3072 wide, 24 heads, T5 (4096) text, CLIP-L pooled (768).
    "flux1": dict(kind="flux", unet=dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768,
                                         context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24,
                                         depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000,
                                         patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[]),
                  latent=(16, 128, 128), text=(512, 4096), pooled=768, cfg=1.0),
    # Qwen-Image: 60 blocks, 24 heads x 128, Qwen2.5-VL (3584) text.
    "qwen": dict(kind="qwen", unet=dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16,
                                        num_layers=60, attention_head_dim=128, num_attention_heads=24,
                                        joint_attention_dim=3584, axes_dims_rope=(16, 56, 56)),
                 latent=(16, 1, 128, 128), text=(256, 3584), pooled=None, cfg=2.5),
    # Chroma (Flux.1-schnell derived): 19 double + 38 single blocks without per-block modulation, a distilled
    # guidance layer (5 layers, 5120 wide) making every block's modulation; T5 text; real CFG.
    "chroma": dict(kind="chroma", unet=dict(image_model="chroma", in_channels=64, out_channels=64,
                                            context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24,
                                            depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
                                            theta=10000, patch_size=2, qkv_bias=True, in_dim=64, out_dim=3072,
                                            hidden_dim=5120, n_layers=5, txt_ids_dims=[], vec_in_dim=None),
                   latent=(16, 128, 128), text=(512, 4096), pooled=None, cfg=4.0),
    # Z-Image-Turbo: NextDiT, 30 main layers + 2 noise and 2 context refiners, 3840 wide, 30 heads, Qwen3-4B
    # (2560) text, image tokens padded to a multiple of 32; guidance-distilled (cfg 1).
    "zimage": dict(kind="zimage", unet=dict(image_model="lumina2", patch_size=2, in_channels=16, dim=3840,
                                            n_layers=30, n_refiner_layers=2, n_heads=30, n_kv_heads=30,
                                            qk_norm=True, cap_feat_dim=2560, axes_dims=[32, 48, 48],
                                            axes_lens=[1536, 512, 512], rope_theta=256.0,
                                            ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True,
                                            time_scale=1000.0, pad_tokens_multiple=32),
                   latent=(16, 128, 128), text=(128, 2560), pooled=None, cfg=1.0),
    "tiny": dict(kind="flux", unet=dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32,
                                        context_in_dim=32, hidden_size=64, mlp_ratio=2.0, num_heads=4, depth=2,
                                        depth_single_blocks=2, axes_dim=[4, 6, 6], theta=10000, patch_size=2,
                                        qkv_bias=True, guidance_embed=True, txt_ids_dims=[]),
                 latent=(16, 16, 16), text=(8, 32), pooled=32, cfg=1.0),
}


def build_model(shape: str, device, dtype):
    import comfy.latent_formats as lf
    import comfy.model_base as mb
    spec = SHAPES[shape]
    qwen = spec["kind"] == "qwen"
    # weights stored in the compute dtype, as a real bf16 checkpoint loads (fp32 would double the 24 GB)
    model_class = {"qwen": mb.QwenImage, "chroma": mb.Chroma, "zimage": mb.Lumina2}.get(spec["kind"], mb.Flux)
    return build_comfy_model(spec["unet"], lf.Wan21 if qwen else lf.Flux, model_class, device, dtype,
                             weight_device=device)


def conditioning(shape: str):
    spec = SHAPES[shape]
    g = torch.Generator().manual_seed(1)

    def one():
        extra = {"pooled_output": torch.randn(1, spec["pooled"], generator=g), "guidance": 3.5} \
            if spec["pooled"] else {}
        return [[torch.randn(1, *spec["text"], generator=g), extra]]
    return one(), one()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="flux1", choices=sorted(SHAPES))
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=None, help="default: 1 for Flux (guidance-distilled), 2.5 Qwen")
    ap.add_argument("--blocks", default="auto")
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--schemes", default="plain,floor_cat,batch,frame_by_frame")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per scheme (after a 2-step warm-up)")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    cpu = a.cpu or not torch.cuda.is_available()
    comfy_nodes = setup_comfy(cpu)
    device = torch.device("cpu" if cpu else "cuda")
    dtype = torch.float32 if cpu else torch.bfloat16
    spec = SHAPES[a.shape]
    cfg = spec["cfg"] if a.cfg is None else a.cfg
    t0 = time.perf_counter()
    model = build_model(a.shape, device, dtype)
    print(f"model built in {time.perf_counter() - t0:.1f} s", flush=True)
    positive, negative = conditioning(a.shape)
    base = torch.randn(1, *spec["latent"], generator=torch.Generator().manual_seed(2))
    drift = torch.randn(1, *spec["latent"], generator=torch.Generator().manual_seed(3))
    latent = {"samples": torch.cat([base + 0.05 * k * drift for k in range(a.frames)])}
    sampler = comfy_nodes.NODE_CLASS_MAPPINGS["CFA_BatchVideoSampler"]
    patch_mod = sys.modules[sampler.__module__.rsplit(".", 1)[0] + ".comfy_patch"]
    blocks = patch_mod.resolve_blocks(model, a.blocks)
    selects = patch_mod.family_of(model.model).make_patch(blocks, "bench").selects

    def ksample(m, steps):
        return comfy_nodes.common_ksampler(m, 1, steps, cfg, "euler", "simple", positive, negative, latent)[0]

    def video(frames_per_batch):
        def go(steps):
            return sampler.execute(model, positive, negative, latent, 1, steps, cfg, "euler", "simple", 1.0,
                                   frames_per_batch, "first+previous", False, a.blocks, 0.0, 1.0, "auto",
                                   "auto", False).args[0]
        return go

    def floor_cat():
        """The chosen blocks attend over [txt; img; txt; img] with pe doubled: the cost of attending over twice
        the keys by itself, which no implementation of the method at this hook can go below."""
        m = model.clone()

        def doubled(q, k, v, pe=None, attn_mask=None, extra_options=None):
            if not selects(extra_options["block_type"], extra_options["block_index"]):
                return {}
            out = {"k": torch.cat([k, k], dim=2), "v": torch.cat([v, v], dim=2)}
            if pe is not None:
                out["pe"] = torch.cat([pe, pe], dim=2)
            return out

        def doubled_override(func, *args, **kwargs):
            """Z-Image: keys arrive after RoPE in the attention override; main layers name their block."""
            options = kwargs.get("transformer_options") or {}
            if "block_type" not in options or not selects(options["block_type"], options["block_index"]):
                return func(*args, **kwargs)
            q, k, v = args[:3]
            return func(q, torch.cat([k, k], dim=2), torch.cat([v, v], dim=2), *args[3:], **kwargs)
        if spec["kind"] == "zimage":
            m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = doubled_override
        else:
            m.set_model_attn1_patch(doubled)
        return lambda steps: ksample(m, steps)

    schemes = {"plain": lambda steps: ksample(model, steps), "floor_cat": floor_cat(), "batch": video(0),
               "chunked": video(a.chunk), "frame_by_frame": video(1)}
    results, outputs = {}, {}
    for name in a.schemes.split(","):
        fn = schemes[name]
        # warm-up with 2 steps (kernels, allocator): a 20-step DiT warm-up would double the GPU time
        results[name], outputs[name] = measure(lambda: fn(a.steps), a.repeats, cpu, warmup=lambda: fn(2))
        print(f"{name:15s} {results[name]['seconds']:8.3f} s  peak {results[name]['peak_gib']:6.2f} GiB", flush=True)
    scale = against_plain(results, outputs, cpu, "batch")
    if "frame_by_frame" in results and "batch" in results:
        results["batch"]["speedup_vs_frame_by_frame"] = \
            results["frame_by_frame"]["seconds"] / results["batch"]["seconds"]
    report = {"device": torch.cuda.get_device_name() if not cpu else "cpu", "torch": torch.__version__,
              "shape": a.shape, "latent": list(spec["latent"]), "frames": a.frames, "steps": a.steps, "cfg": cfg,
              "blocks": sorted(blocks), "dtype": str(dtype), "sampler": "euler/simple", "output_scale": scale,
              "results": results}
    write_report(report, a.json)


if __name__ == "__main__":
    main()

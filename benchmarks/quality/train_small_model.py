"""Trains the small video model of tests/fixtures/trained/ on one GPU, from scratch, in a few minutes.

Two stages, one command, fixed seeds:
1. an autoencoder with ComfyUI's TAESD architecture (8x down, 4 latent channels) on 128x128 crops of the
   training clips (L1 + MSE + image-gradient loss; latents kept near unit scale and decoded from slightly
   noised latents, so the latent space is smooth enough to diffuse in);
2. ComfyUI's SD U-Net (cfa_trained_model.UNET_CONFIG) in that latent space: EPS prediction on SD's discrete
   1000-step schedule with min-SNR(5) weighting, unconditional (one all-zero context token), AdamW, bf16
   autocast, EMA weights exported.
Then it writes the fp16 weights, a training log (loss curves, held-out PSNR) and a sample grid.

    python benchmarks/quality/prepare_footage.py --out .train_footage      # where registries are reachable
    python benchmarks/quality/train_small_model.py --comfyui ~/ComfyUI --footage .train_footage \\
        --out tests/fixtures/trained --vae-minutes 2.3 --unet-minutes 5.4

Only the training clips are read for training (bikes, bigbuckbunny); carphone, vtest and tree are read only for
the held-out figures at the end. Each stage trains for a time budget, so step counts (and the weights, in their
last bits) vary a little from run to run and GPU to GPU. `--smoke --vae-minutes 0.05 --unet-minutes 0.05
--device cpu` checks the script on any machine in a few minutes.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "footage"))
import cfa_footage  # noqa: E402
import cfa_trained_model as spec  # noqa: E402

TRAIN_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4")
HELD_OUT_CLIPS = ("carphone.mp4", "vtest.avi", "tree.avi")
TRAIN_HEIGHTS = (144, 216)   # each training frame at two scales
HELD_OUT_SIZE = (192, 144)   # width, height of the held-out frames in the figures
CROP = 128                   # pixels (16 latent pixels)
SIZES = {"vae_batch": 48, "unet_batch": 128, "held_out_frames": 24, "grid_steps": 24}
SMOKE_SIZES = {"vae_batch": 2, "unet_batch": 4, "held_out_frames": 2, "grid_steps": 2}


class FootageError(RuntimeError):
    pass


def read_clip(path: Path, max_frames: int | None = None) -> np.ndarray:
    """T x H x W x 3 uint8 RGB; refuses a missing or unreadable file, naming it."""
    if not path.is_file():
        raise FootageError(f"footage missing: {path} (gather it with benchmarks/quality/prepare_footage.py)")
    frames = cfa_footage.read_video_file(path, max_frames)
    if not frames:
        raise FootageError(f"footage unreadable: OpenCV decoded no frame of {path}")
    return np.stack(frames)


def resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def to_tensor(frames: np.ndarray, device) -> torch.Tensor:
    """uint8 T x H x W x 3 -> float T x 3 x H x W in [0, 1]"""
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float() / 255.0


def init_like_torch(module: torch.nn.Module) -> None:
    """ComfyUI's layers skip initialisation (weights are loaded later); here they are trained, so give every
    layer torch's own default initialisation."""
    for m in module.modules():
        for base in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(m, base):
                base.reset_parameters(m)
                break


def zero_residual_outputs(unet: torch.nn.Module) -> None:
    """Zero the last layer of each residual branch and the output conv (usual for diffusion U-Nets: every block
    starts as the identity, which trains faster)."""
    with torch.no_grad():
        for name, m in unet.named_modules():
            if name.endswith("out_layers.3") or name.endswith("proj_out") or name == "out.2":
                for p in m.parameters():
                    p.zero_()


def random_crops(frames: list[torch.Tensor], batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """`batch` random size x size crops (with horizontal flips) from a list of T x C x H x W tensors."""
    out = []
    for _ in range(batch):
        clip = frames[int(torch.randint(len(frames), (1,), generator=gen))]
        t = int(torch.randint(clip.shape[0], (1,), generator=gen))
        y = int(torch.randint(clip.shape[2] - size + 1, (1,), generator=gen))
        x = int(torch.randint(clip.shape[3] - size + 1, (1,), generator=gen))
        crop = clip[t, :, y:y + size, x:x + size]
        if bool(torch.randint(2, (1,), generator=gen)):
            crop = crop.flip(-1)
        out.append(crop)
    return torch.stack(out)


def lr_at(step_fraction: float, base: float, warmup_fraction: float = 0.03) -> float:
    if step_fraction < warmup_fraction:
        return base * step_fraction / warmup_fraction
    progress = (step_fraction - warmup_fraction) / (1 - warmup_fraction)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_autoencoder(frames, minutes, device, gen, log):
    from comfy.taesd.taesd import Decoder, Encoder

    encoder, decoder = Encoder(4).to(device), Decoder(4).to(device)
    init_like_torch(encoder)
    init_like_torch(decoder)
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    budget, start, step, history = minutes * 60, time.time(), 0, []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    while time.time() - start < budget:
        for group in opt.param_groups:
            group["lr"] = lr_at((time.time() - start) / budget, 1e-3)
        x = random_crops(frames, SIZES["vae_batch"], CROP, gen)
        with autocast:
            z = encoder(x)
            z_noisy = z + 0.05 * torch.randn(z.shape, device=device, generator=None)
            y = decoder(z_noisy).float()
        z = z.float()
        grad = lambda t: (t[..., 1:, :] - t[..., :-1, :], t[..., :, 1:] - t[..., :, :-1])  # noqa: E731
        (gy, gx), (ty, tx) = grad(y), grad(x)
        loss = (F.l1_loss(y, x) + F.mse_loss(y, x) + 0.5 * (F.l1_loss(gy, ty) + F.l1_loss(gx, tx))
                + 1e-3 * z.pow(2).mean() + 1e-2 * F.relu(z.abs() - 2.5).pow(2).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            history.append([step, round(time.time() - start, 1), loss.item()])
    log["autoencoder"] = {"steps": step, "seconds": round(time.time() - start, 1), "batch": SIZES["vae_batch"],
                          "crop": CROP, "loss_history": history}
    print(f"autoencoder: {step} steps in {time.time() - start:.0f} s, last loss {history[-1][2] if history else '?'}",
          flush=True)
    return encoder.eval(), decoder.eval()


@torch.no_grad()
def encode_all(encoder, frames, device, chunk=32):
    return [torch.cat([encoder(clip[i:i + chunk]).float() for i in range(0, clip.shape[0], chunk)])
            for clip in frames]


def build_unet(device):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    cfg = dict(spec.UNET_CONFIG)
    unet = UNetModel(**cfg, dtype=torch.float32, device=device, operations=comfy.ops.disable_weight_init)
    init_like_torch(unet)
    zero_residual_outputs(unet)
    return unet


def train_unet(latents, minutes, device, gen, log):
    batch = SIZES["unet_batch"]
    unet = build_unet(device)
    ema = copy.deepcopy(unet).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    sigmas = spec.schedule_sigmas().to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=4e-4, weight_decay=0.01)
    crop = CROP // 8
    budget, start, step, history = minutes * 60, time.time(), 0, []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    context = spec.empty_conditioning(batch).to(device)
    while time.time() - start < budget:
        for group in opt.param_groups:
            group["lr"] = lr_at((time.time() - start) / budget, 4e-4)
        x0 = random_crops(latents, batch, crop, gen)
        t = torch.randint(0, spec.TIMESTEPS, (batch,), device=device)
        sigma = sigmas[t].view(-1, 1, 1, 1)
        noise = torch.randn_like(x0)
        x_in = (x0 + sigma * noise) / (sigma ** 2 + 1).sqrt()   # ComfyUI's EPS calculate_input
        with autocast:
            eps = unet(x_in, t.float(), context=context).float()
        snr = 1.0 / sigma.view(-1) ** 2
        weight = torch.clamp(snr, max=5.0) / snr                 # min-SNR(5) for EPS prediction
        loss = (weight * (eps - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        step += 1
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pu in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(pu, 1 - decay)
        if step % 50 == 0:
            history.append([step, round(time.time() - start, 1), loss.item()])
    log["unet"] = {"steps": step, "seconds": round(time.time() - start, 1), "batch": batch,
                   "crop_latent": crop, "loss_history": history,
                   "parameters": sum(p.numel() for p in unet.parameters())}
    print(f"unet: {step} steps in {time.time() - start:.0f} s, last loss {history[-1][2] if history else '?'}",
          flush=True)
    return ema


@torch.no_grad()
def denoise(unet, z_noisy, sigma, context):
    """ComfyUI's EPS denoised prediction x - sigma * eps at one sigma."""
    sigmas = spec.schedule_sigmas().to(z_noisy.device)
    t = torch.searchsorted(sigmas, torch.tensor([sigma], device=z_noisy.device)).clamp(max=spec.TIMESTEPS - 1)
    eps = unet(z_noisy / (sigma ** 2 + 1) ** 0.5, t.float().expand(z_noisy.shape[0]), context=context)
    return z_noisy - sigma * eps.float()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss(a.clamp(0, 1), b.clamp(0, 1)).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def held_out_figures(encoder, decoder, unet, footage, device, shift, scale, log, seed):
    """PSNR (dB, against the source frames) on the held-out clips: the autoencoder alone, and at each sigma
    the noisy latent decoded, the trained U-Net's denoised prediction, and the same U-Net with random weights."""
    random_unet = build_unet(device).eval()
    torch.manual_seed(seed)
    # random weights without the zeroed outputs (a zero-output EPS model would just return the noisy input)
    for m in random_unet.modules():
        for base in (torch.nn.Conv2d, torch.nn.Linear):
            if isinstance(m, base):
                base.reset_parameters(m)
    out = {}
    gen = torch.Generator(device=device).manual_seed(seed)
    for clip in HELD_OUT_CLIPS:
        frames = to_tensor(resize(read_clip(footage / clip, SIZES["held_out_frames"]), *HELD_OUT_SIZE), device)
        z = encoder(frames).float()
        row = {"autoencoder": psnr(decoder(z).float(), frames)}
        zs = (z - shift) * scale
        context = spec.empty_conditioning(z.shape[0]).to(device)
        for sigma in (0.2, 0.5, 1.0, 2.0):
            noisy = zs + sigma * torch.randn(zs.shape, device=device, generator=gen)
            dec = lambda latent: decoder(latent / scale + shift).float()  # noqa: E731
            row[f"sigma_{sigma}"] = {
                "noisy_input": psnr(dec(noisy), frames),
                "trained": psnr(dec(denoise(unet, noisy, sigma, context)), frames),
                "random_weights": psnr(dec(denoise(random_unet, noisy, sigma, context)), frames),
            }
        out[clip] = row
        print(clip, json.dumps(row), flush=True)
    log["held_out_psnr_db"] = out


@torch.no_grad()
def sample_grid(unet, decoder, device, shift, scale, path, seed, n=16):
    """Unconditional samples (Euler on the Karras-spaced sigmas of SD's schedule), 4 x 4 at 128 x 128."""
    steps = SIZES["grid_steps"]
    sigmas_all = spec.schedule_sigmas()
    smin, smax, rho = float(sigmas_all[0]), float(sigmas_all[-1]), 7.0
    ramp = torch.linspace(0, 1, steps)
    sigmas = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    sigmas = torch.cat([sigmas, torch.zeros(1)]).tolist()
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn((n, 4, CROP // 8, CROP // 8), device=device, generator=gen) * sigmas[0]
    context = spec.empty_conditioning(n).to(device)
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = denoise(unet, x, s, context)
        x = d + (x - d) * (s_next / s)
    images = decoder(x / scale + shift).float().clamp(0, 1)
    grid = images.view(4, 4, 3, CROP, CROP).permute(0, 3, 1, 4, 2).reshape(4 * CROP, 4 * CROP, 3)
    from PIL import Image

    Image.fromarray((grid.cpu().numpy() * 255).round().astype(np.uint8)).save(path)


def save(encoder, decoder, unet, out: Path, log: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    vae = {f"taesd_encoder.{k}": v.half().contiguous() for k, v in encoder.state_dict().items()}
    vae.update({f"taesd_decoder.{k}": v.half().contiguous() for k, v in decoder.state_dict().items()})
    vae["vae_scale"] = torch.tensor(1.0)
    vae["vae_shift"] = torch.tensor(0.0)
    save_file(vae, str(out / spec.VAE_FILE), metadata={"cfa_training": json.dumps({"seed": log["seed"]})})
    unet_sd = {k: v.half().contiguous() for k, v in unet.state_dict().items()}
    meta = {k: log[k] for k in ("latent_shift", "latent_scale", "seed", "command", "device", "torch")}
    meta.update({"unet_steps": log["unet"]["steps"], "autoencoder_steps": log["autoencoder"]["steps"]})
    save_file(unet_sd, str(out / spec.UNET_FILE), metadata={"cfa_training": json.dumps(meta)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", type=Path, required=True, help="a ComfyUI checkout (0.3.64 or newer)")
    parser.add_argument("--footage", type=Path, required=True, help="folder from prepare_footage.py")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--log-dir", type=Path, default=None, help="where the log and the grid go (default --out)")
    parser.add_argument("--vae-minutes", type=float, default=2.3)
    parser.add_argument("--unet-minutes", type=float, default=5.4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny batches: checks the script on a CPU quickly")
    args = parser.parse_args()
    if args.smoke:
        SIZES.update(SMOKE_SIZES)

    for name in TRAIN_CLIPS + HELD_OUT_CLIPS:   # refuse missing footage before minutes of training
        if not (args.footage / name).is_file():
            raise SystemExit(f"footage missing: {args.footage / name} "
                             "(gather it with benchmarks/quality/prepare_footage.py)")
    if not (args.comfyui / "comfy" / "taesd" / "taesd.py").is_file():
        raise SystemExit(f"--comfyui {args.comfyui} is not a ComfyUI checkout (no comfy/taesd/taesd.py)")
    sys.path.insert(0, str(args.comfyui))
    from comfy.cli_args import args as comfy_args
    comfy_args.cpu = args.device == "cpu"

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    started = time.time()
    log = {"seed": args.seed, "command": " ".join(sys.argv), "torch": torch.__version__,
           "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "train_clips": list(TRAIN_CLIPS), "held_out_clips": list(HELD_OUT_CLIPS)}

    frames = []
    for name in TRAIN_CLIPS:
        clip = read_clip(args.footage / name, 8 if args.smoke else None)
        for height in TRAIN_HEIGHTS:
            width = int(round(clip.shape[2] * height / clip.shape[1] / 8)) * 8
            frames.append(to_tensor(resize(clip, width, height), device))
    log["train_frames"] = {name: int(f.shape[0]) for name, f in zip(
        [n for n in TRAIN_CLIPS for _ in TRAIN_HEIGHTS], frames)}

    encoder, decoder = train_autoencoder(frames, args.vae_minutes, device, gen, log)
    latents = encode_all(encoder, frames, device)
    flat = torch.cat([z.flatten() for z in latents])
    shift, scale = float(flat.mean()), float(1.0 / flat.std())
    log["latent_shift"], log["latent_scale"] = shift, scale
    latents = [(z - shift) * scale for z in latents]
    unet = train_unet(latents, args.unet_minutes, device, gen, log)
    log["train_seconds"] = round(time.time() - started, 1)
    save(encoder, decoder, unet, args.out, log)

    log_dir = args.log_dir or args.out
    log_dir.mkdir(parents=True, exist_ok=True)
    held_out_figures(encoder, decoder, unet, args.footage, device, shift, scale, log, args.seed)
    sample_grid(unet, decoder, device, shift, scale, log_dir / "samples.png", args.seed)
    log["total_seconds"] = round(time.time() - started, 1)
    (log_dir / "training_log.json").write_text(json.dumps(log, indent=1))
    print(f"done in {log['total_seconds']} s; weights in {args.out}", flush=True)


if __name__ == "__main__":
    main()

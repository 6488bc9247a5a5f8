"""Training a small WF-VAE from scratch (reconstruction + a light KL term), for a domain of one's own.

The released WF-VAE was trained with adversarial and perceptual losses on web video; this trainer is the
simple part of that recipe, enough for small synthetic domains such as `opensora make-demo-data`'s shapes:
a squared reconstruction error of posterior samples weighted towards what stands out from the background,
plus `edge_weight` x L1 of the spatial gradients (sharp edges), plus `kl_weight` x KL; Adam with a cosine
decay. At the end the latent scale and shift (per channel, from the posterior means of the training data) are
written into the saved config, so latents have roughly zero mean and unit variance for the transformer.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING

import torch

from opensora_cli.errors import TrainingDiverged
from opensora_cli.schemas.train import VaeTrainConfig, VaeTrainResult

if TYPE_CHECKING:
    from opensora_cli.schemas.events import TrainReporter


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, foreground_weight: float) -> torch.Tensor:
    """Squared error, each pixel weighted by 1 + foreground_weight x its distance from the clip's median colour.

    Small objects on a plain background are a few percent of the pixels: unweighted, a small VAE learns the
    background and blurs the objects away (seen with the demo shapes); the weight gives them their share.
    """
    median = target.flatten(2).median(dim=2).values[..., None, None, None]  # (B, C, 1, 1, 1)
    weight = 1 + foreground_weight * (target - median).abs().sum(dim=1, keepdim=True) / 2
    return (weight * (reconstruction - target) ** 2).mean() / weight.mean()


def edge_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between the horizontal and vertical differences of two videos (B, C, T, H, W)."""
    dx = lambda v: v[..., :, 1:] - v[..., :, :-1]  # noqa: E731
    dy = lambda v: v[..., 1:, :] - v[..., :-1, :]  # noqa: E731
    return (dx(reconstruction) - dx(target)).abs().mean() + (dy(reconstruction) - dy(target)).abs().mean()


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2)."""
    mse = torch.mean((reconstruction.clamp(-1, 1) - target) ** 2).item()
    return 100.0 if mse == 0 else 10 * math.log10(4.0 / mse)


def train_vae(config: VaeTrainConfig, reporter: TrainReporter) -> VaeTrainResult:
    """Train, calibrate the latent scale/shift, save `config.output_dir` (a diffusers folder).

    Args:
        config: the validated options.
        reporter: receives `start` and one `step` per optimisation step.

    Returns:
        The losses, the reconstruction PSNR of the calibration clips and the calibrated scale and shift.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (nothing is saved then).
    """
    from torch.utils.data import DataLoader

    from opensora_cli.data.bucketing import BucketBatchSampler
    from opensora_cli.data.dataset import VideoTextDataset, collate
    from opensora_cli.distributed.device import resolve_device
    from opensora_cli.models.registry import build

    device = resolve_device(config.device)
    if config.init is not None:
        from opensora_cli.models.autoencoder_wfvae import WFVAEModel
        from opensora_cli.models.loading import load_pretrained

        vae = load_pretrained(WFVAEModel, config.init, device=device).train()
    else:
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only
            torch.manual_seed(config.seed)
            vae = build(config.preset).to(device).train()
    dataset = VideoTextDataset(config.data, num_frames=config.num_frames, max_hxw=config.max_hxw,
                               min_hxw=config.min_hxw, hw_stride=config.hw_stride, train_fps=config.train_fps,
                               seed=config.seed)
    sampler = BucketBatchSampler(dataset.bucket_keys, config.train_batch_size, seed=config.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=config.dataloader_num_workers,
                        collate_fn=collate)
    params = [p for p in vae.parameters() if p.requires_grad]
    # beta1 0.5 as in autoencoder/GAN training: with 0.9 the tiny VAE oscillated and learnt far slower.
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, betas=(0.5, 0.9))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.max_train_steps,
                                                          eta_min=config.learning_rate / 100)
    generator = torch.Generator(device).manual_seed(config.seed)
    result = VaeTrainResult(output=config.output_dir, steps=config.max_train_steps)
    reporter.start(config.max_train_steps, 0)

    # 1. Reconstruction training
    started = time.perf_counter()
    batches = iter(loader)
    for step in range(1, config.max_train_steps + 1):
        x = next(batches)["pixel_values"].to(device)  # (B, 3, T, H, W) in [-1, 1]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16"):
            posterior = vae.encode(x).latent_dist
            reconstruction = vae.decode(posterior.sample(generator)).sample
        reconstruction = reconstruction.float()
        loss = (reconstruction_loss(reconstruction, x, config.foreground_weight)
                + config.edge_weight * edge_loss(reconstruction, x) + config.kl_weight * posterior.kl().float().mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(f"the VAE loss became {value} at step {step}")
        result.losses.append(value)
        elapsed = time.perf_counter() - started
        reporter.step(step, value, elapsed / step, step * len(x) / elapsed, schedule.get_last_lr()[0])
    result.seconds_per_step = (time.perf_counter() - started) / config.max_train_steps

    # 2. Calibration: per-channel mean and std of the posterior means -> shift, scale; and the PSNR
    vae.eval()
    means, psnrs = [], []
    with torch.no_grad():
        for _ in range(config.calibration_batches):
            x = next(batches)["pixel_values"].to(device)
            mean = vae.encode(x).latent_dist.mean
            means.append(mean.transpose(0, 1).flatten(1))  # (C, B*T'*h*w)
            psnrs.append(psnr(vae.decode(mean).sample, x))
    stacked = torch.cat(means, dim=1)
    result.shift = stacked.mean(dim=1).tolist()
    result.scale = (1.0 / stacked.std(dim=1).clamp(min=1e-4)).tolist()
    result.psnr_db = sum(psnrs) / len(psnrs)

    # 3. Save with the calibrated constants in the config
    vae.save_pretrained(config.output_dir, safe_serialization=True)
    config_path = config.output_dir / "config.json"
    saved = json.loads(config_path.read_text())
    saved.update(scale=result.scale, shift=result.shift)
    config_path.write_text(json.dumps(saved, indent=2))
    return result

"""The training loop: fine-tune the inpainting transformer with masks drawn from a mask config.

Reads top to bottom: setup, models, data, optimiser, resume, loop. Side effects (checkpoints, logs) happen on
the main process only.

Errors end as one line: a bad file met by a DataLoader worker comes back to the main process as data (see
`data.dataset.ErrorsAsItems`) and is raised there with the last checkpoint; Ctrl-C becomes `TrainingInterrupted`
(the step reached and the checkpoint to resume from). Resuming with options that differ from the checkpoint's
run is allowed (a new learning rate is a common reason to resume) but reported, field by field.

Determinism: every random draw of a step (timesteps, noise, posterior samples, condition noise) comes from a
generator seeded by (seed, step, micro-batch, rank), and every data item from (seed, epoch, index); so a run
resumed from a checkpoint takes exactly the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from opensora_cli.errors import InputError, ModelLoadError, OpenSoraError
from opensora_cli.schemas.train import TrainConfig
from opensora_cli.utils.seeds import stable_seed

NUM_TRAIN_TIMESTEPS = 1000


class TrainingDiverged(OpenSoraError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(OpenSoraError):
    """Ctrl-C during a run. Checkpoints are atomic, so the last one is complete whatever was being written.

    Args:
        step: optimisation steps done when it stopped (None: before the first one, while setting up).
        last_checkpoint: the newest checkpoint of the run (saved or resumed from), or None.
        output_dir: the run's output folder (`latest` finds checkpoints there).
    """

    exit_code = 130

    def __init__(self, step: int | None, last_checkpoint: Path | None, output_dir: Path) -> None:
        self.step, self.last_checkpoint = step, last_checkpoint
        where = "while setting up" if step is None else f"at step {step}"
        if last_checkpoint is None:
            how = "no checkpoint yet, so the same command starts over (--checkpointing-steps N saves more often)"
        else:
            inside = Path(last_checkpoint).resolve().parent == Path(output_dir).resolve()
            how = (f"last checkpoint: {last_checkpoint}; resume with --resume-from-checkpoint "
                   + ("latest" if inside else str(last_checkpoint)))
        super().__init__(f"interrupted {where}; {how}")


class TrainReporter:
    """Progress events of a training run. These do nothing (a `warning` is passed on as a `phase`); the CLI
    draws them."""

    def phase(self, text: str) -> None: ...
    def data_report(self, summary: dict, problems: list, small_buckets: dict) -> None: ...
    def start(self, total_steps: int, first_step: int) -> None: ...
    def step(self, step: int, loss: float, seconds: float, samples_per_second: float, lr: float) -> None: ...
    def replaced(self, problems: list) -> None: ...
    def checkpoint(self, path: Path) -> None: ...
    def close(self) -> None: ...

    def warning(self, text: str) -> None:
        """Something the user should know that does not stop the run (e.g. options changed on resume)."""
        self.phase(f"warning: {text}")


@dataclass
class TrainResult:
    steps: int
    first_step: int
    last_checkpoint: Path | None
    losses: list[float] = field(default_factory=list)
    seconds_per_step: float = 0.0
    samples_per_second: float = 0.0
    peak_memory_gib: float | None = None
    latent_cache: dict[str, float] | None = None  # hits, misses, entries, mib (with --latent-cache-mib)


def step_generator(seed: int, step: int, micro: int, rank: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device).manual_seed(stable_seed(seed, step, micro, rank, namespace="opensora-train"))


# ------------------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------------------


def build_transformer(config: TrainConfig, dirs: dict[str, Path]):
    """The model to train, in fp32 (mixed precision autocasts the forward). Returns (model, note)."""
    from opensora_cli.models.loading import init_from_pretrained, load_pretrained
    from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3

    if "transformer" in dirs:  # continue training a saved inpaint model
        return load_pretrained(OpenSoraInpaint_v1_3, dirs["transformer"]), f"loaded {dirs['transformer']}"
    from opensora_cli.models.registry import build

    with torch.random.fork_rng(devices=[]):  # the initial weights depend on --seed only
        torch.manual_seed(config.seed)
        model = build(config.model)
    if not isinstance(model, OpenSoraInpaint_v1_3):
        raise InputError(f"--model: {config.model} is not an inpainting transformer preset")
    if config.pretrained_transformer_model_path is None:
        return model, f"{config.model} with random weights (no --pretrained-transformer-model-path)"
    return model, init_from_pretrained(model, config.pretrained_transformer_model_path)


# ------------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------------


@dataclass
class _Progress:
    """Where a run is, for the Ctrl-C message: steps done (None before the first) and the newest checkpoint."""

    step: int | None = None
    checkpoint: Path | None = None


def train(config: TrainConfig, dirs: dict[str, Path], reporter: TrainReporter | None = None) -> TrainResult:
    """Run (or resume) a training run. `dirs` holds "vae", "text_encoder" and optionally "transformer" folders.

    Raises:
        TrainingInterrupted: on Ctrl-C (KeyboardInterrupt), with the step reached and the last checkpoint.
        InputError: bad data (the file, what is wrong, the last checkpoint), bad options.
    """
    progress = _Progress()
    try:
        return _train(config, dirs, reporter or TrainReporter(), progress)
    except KeyboardInterrupt:
        raise TrainingInterrupted(progress.step, progress.checkpoint, config.output_dir) from None


def _train(config: TrainConfig, dirs: dict[str, Path], reporter: TrainReporter, progress: _Progress) -> TrainResult:
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel
    from torch.utils.data import DataLoader

    from opensora_cli.data.bucketing import BucketBatchSampler
    from opensora_cli.data.dataset import ErrorsAsItems, VideoTextDataset, collate
    from opensora_cli.masks.compressor import MaskCompressor
    from opensora_cli.masks.noise import GaussianNoiseAdder
    from opensora_cli.models.autoencoder_wfvae import WFVAEModel
    from opensora_cli.models.loading import load_pretrained
    from opensora_cli.models.text_encoder import TextEncoder
    from opensora_cli.pipelines.schedulers import make_scheduler
    from opensora_cli.schemas.mask_config import MaskConfig, load_mask_config
    from opensora_cli.training.checkpointing import find_checkpoint, load_checkpoint, save_checkpoint

    # 1. Setup: accelerate decides devices and processes (torchrun / accelerate launch environment); the
    # checkpoint to resume from is found first, so that Ctrl-C while loading can already point to it
    checkpoint = find_checkpoint(config.output_dir, config.resume_from_checkpoint)
    progress.checkpoint = checkpoint
    deepspeed_plugin = None
    if config.deepspeed == "zero2":
        from accelerate.utils import DeepSpeedPlugin

        deepspeed_plugin = DeepSpeedPlugin(zero_stage=2, gradient_clipping=config.max_grad_norm)
    cpu = config.device == "cpu" or (config.device is None and not torch.cuda.is_available() and not _npu())
    mixed = config.mixed_precision or ("no" if cpu else "bf16")
    accelerator = Accelerator(
        mixed_precision=mixed,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.report_to,
        project_dir=str(config.output_dir),
        cpu=cpu,
        deepspeed_plugin=deepspeed_plugin,
    )
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed]
    if accelerator.is_main_process:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        if config.report_to:
            accelerator.init_trackers("opensora-train", config=_loggable(config))

    # 2. Models: frozen VAE and text encoder in the compute dtype, the transformer in fp32
    reporter.phase("loading models")
    # pad to the batch's longest caption: same loss as 512 padded slots, a fraction of the work
    text_encoder = TextEncoder.from_pretrained(dirs["text_encoder"], dtype=weight_dtype, device=device,
                                               padding="longest")
    vae = load_pretrained(WFVAEModel, dirs["vae"], dtype=weight_dtype, device=device).requires_grad_(False)
    transformer, note = build_transformer(config, dirs)
    reporter.phase(note)
    if transformer.config.caption_channels != text_encoder.hidden_size:
        raise ModelLoadError(f"the text encoder gives {text_encoder.hidden_size}-wide states, the transformer "
                             f"expects {transformer.config.caption_channels}")
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    compressor = MaskCompressor(*vae.vae_scale_factor)
    cache = None
    if config.latent_cache_mib:  # the schema makes sure the encoding is the (deterministic) posterior mean
        from opensora_cli.training.latent_cache import LatentCache

        cache = LatentCache(vae.encode_latents, config.latent_cache_mib * 2**20)
    noise_adder = GaussianNoiseAdder.for_training() if config.add_noise_to_condition else None
    # The schedule sampling uses (zero terminal SNR), so the SNR weights and targets match inference.
    alphas_cumprod = make_scheduler("DDPM").alphas_cumprod.to(device=device, dtype=torch.float32)

    # 3. Data: buckets of one size, each rank its share of every global batch
    mask_config = MaskConfig()
    if config.mask_config is not None:
        mask_config, problems, _ = load_mask_config(config.mask_config)
        if problems:
            raise InputError(problems[0].render())
    dataset = VideoTextDataset(
        config.data, num_frames=config.num_frames, max_hxw=config.max_hxw, min_hxw=config.effective_min_hxw(),
        hw_stride=config.hw_stride, train_fps=config.train_fps, mask_config=mask_config, cfg=config.cfg,
        default_text_ratio=config.default_text_ratio, seed=config.seed, bad_data=config.bad_data,
    )
    sampler = BucketBatchSampler(dataset.bucket_keys, config.train_batch_size, num_replicas=world, rank=rank,
                                 seed=config.seed)
    if accelerator.is_main_process:
        reporter.data_report(dataset.summary(), dataset.problems, sampler.small_buckets)

    # 4. Optimiser, LR warm-up, EMA
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    warmup = config.lr_warmup_steps
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    model, optimizer = accelerator.prepare(transformer, optimizer)
    ema = EMAModel(transformer.parameters(), decay=config.ema_decay) if config.use_ema else None
    if ema is not None:
        ema.to(device)

    # 5. Resume: weights, optimiser, EMA, step and data position
    global_step = 0
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, transformer, optimizer.optimizer if hasattr(optimizer, "optimizer")
                                else optimizer, lr_scheduler, ema)
        global_step = state["step"]
        _apply_hyperparameters(optimizer, lr_scheduler, config)
        reporter.phase(f"resumed from {checkpoint} at step {global_step}")
        changed = changed_options(state, config, mask_config, world)
        if changed:
            reporter.warning(f"{checkpoint} was trained with other options; this run uses the new values: "
                             + ", ".join(changed))
    progress.step = global_step
    sampler.set_position(*sampler.position_after(global_step * config.gradient_accumulation_steps))
    # Workers hand a bad file back as an item (raised below, in this process): see ErrorsAsItems.
    loader = DataLoader(ErrorsAsItems(dataset), batch_sampler=sampler, num_workers=config.dataloader_num_workers,
                        collate_fn=collate, persistent_workers=config.dataloader_num_workers > 0)

    # 6. Loop
    links = {"vae": dirs["vae"], "text_encoder": dirs["text_encoder"]}
    result = TrainResult(steps=global_step, first_step=global_step, last_checkpoint=checkpoint)
    if global_step >= config.max_train_steps:
        return result
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    reporter.start(config.max_train_steps, global_step)
    batches = iter(loader)
    micro, step_started, run_started = 0, time.perf_counter(), time.perf_counter()
    samples_seen = 0
    while global_step < config.max_train_steps:
        batch = next(batches)
        if "error" in batch:
            last = result.last_checkpoint
            raise InputError(f"{batch['error']}; last checkpoint: {last if last else 'none'}")
        if batch["replaced"]:
            reporter.replaced(batch["replaced"])
        generator = step_generator(config.seed, global_step, micro, rank, device)
        with accelerator.accumulate(model):
            loss = _loss(batch, model, vae, text_encoder, compressor, noise_adder, alphas_cumprod, config,
                         weight_dtype, device, generator, cache)
            accelerator.backward(loss)
            if accelerator.sync_gradients and deepspeed_plugin is None:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        samples_seen += batch["pixel_values"].shape[0] * world
        micro += 1
        if not accelerator.sync_gradients:
            continue

        # one optimisation step done
        micro = 0
        lr_scheduler.step()
        if ema is not None:
            ema.step(transformer.parameters())
        global_step += 1
        progress.step = global_step
        loss_value = accelerator.reduce(loss.detach().float(), reduction="mean").item()
        if not math.isfinite(loss_value):
            last = result.last_checkpoint
            raise TrainingDiverged(
                f"the loss became {loss_value} at step {global_step}; stopped without saving — the last good "
                f"checkpoint is {last if last else 'none (no checkpoint yet)'}; lower --learning-rate or use "
                "--mixed-precision bf16 instead of fp16"
            )
        now = time.perf_counter()
        seconds, step_started = now - step_started, now
        rate = samples_seen / (now - run_started)
        result.losses.append(loss_value)
        reporter.step(global_step, loss_value, seconds, rate, lr_scheduler.get_last_lr()[0])
        if config.report_to:
            accelerator.log({"train_loss": loss_value, "lr": lr_scheduler.get_last_lr()[0]}, step=global_step)
        if global_step % config.checkpointing_steps == 0 or global_step == config.max_train_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                epoch, batch_index = sampler.position_after(global_step * config.gradient_accumulation_steps)
                result.last_checkpoint = save_checkpoint(
                    config.output_dir, global_step, transformer, optimizer.optimizer
                    if hasattr(optimizer, "optimizer") else optimizer, lr_scheduler, ema,
                    {"loss": loss_value, "epoch": epoch, "batch": batch_index, "world_size": world,
                     "config": _loggable(config), "mask_config_values": mask_config.model_dump(mode="json")},
                    links, config.checkpoints_total_limit,
                    defaults={"num_frames": config.num_frames, "max_hxw": config.max_hxw,
                              "max_hxw_range": [config.effective_min_hxw(), config.max_hxw]},
                )
                progress.checkpoint = result.last_checkpoint
                reporter.checkpoint(result.last_checkpoint)
            accelerator.wait_for_everyone()
    result.steps = global_step
    elapsed = time.perf_counter() - run_started
    done = global_step - result.first_step
    result.seconds_per_step = elapsed / max(1, done)
    result.samples_per_second = samples_seen / elapsed if elapsed else 0.0
    if cache is not None:
        result.latent_cache = {"hits": cache.hits, "misses": cache.misses, "entries": len(cache),
                               "mib": round(cache.bytes / 2**20, 1)}
    if device.type == "cuda":
        result.peak_memory_gib = torch.cuda.max_memory_allocated() / 2**30
    if world > 1:  # every rank past its collectives before the group goes (with the DDP model, at return)
        from opensora_cli.distributed.device import drain

        drain()
    accelerator.end_training()
    return result


def _loss(batch, model, vae, text_encoder, compressor, noise_adder, alphas_cumprod, config: TrainConfig,
          weight_dtype, device, generator, cache=None) -> torch.Tensor:
    """v-prediction loss of one micro-batch (optionally min-SNR weighted), noise and targets in fp32."""
    mask = batch["mask"].to(device, weight_dtype)  # (B, 1, T, H, W), 1 = generate
    pixels = batch["pixel_values"]  # (B, 3, T, H, W), on the host (the cache hashes it there)
    masked = batch["masked_pixel_values"]  # (B, 3, T, H, W), unknown frames -1

    def encode(x: torch.Tensor) -> torch.Tensor:
        return vae.encode_latents(x.to(device, weight_dtype), sample_posterior=config.vae_sample_posterior,
                                  generator=generator).float()

    with torch.no_grad():
        if noise_adder is not None:
            masked = noise_adder(masked.to(device, weight_dtype), mask, generator)
        if cache is None:
            latents, condition = encode(pixels), encode(masked)
        elif noise_adder is None:  # posterior means of inputs seen before come from memory (same values)
            latents, condition = cache(pixels, masked, device=device, dtype=weight_dtype)
        else:  # noisy conditions never repeat: only the clean clips are worth caching
            (latents,) = cache(pixels, device=device, dtype=weight_dtype)
            condition = encode(masked)
        latent_mask = compressor(mask).float()  # (B, 4, T', h, w)
        text, text_mask = text_encoder(batch["caption"])  # (B, 1, L, C), (B, 1, L)

    batch_size = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device=device)
    timesteps = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch_size,), generator=generator, device=device)
    alpha_bar = alphas_cumprod[timesteps].view(batch_size, 1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
    target = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents  # v

    model_input = torch.cat([noisy, condition, latent_mask], dim=1)  # (B, 20, T', h, w)
    prediction = model(model_input, timesteps, encoder_hidden_states=text, encoder_attention_mask=text_mask,
                       return_dict=False)[0]
    per_sample = F.mse_loss(prediction.float(), target, reduction="none").mean(dim=(1, 2, 3, 4))
    if config.snr_gamma is not None:
        snr = alpha_bar.flatten() / (1 - alpha_bar.flatten()).clamp(min=1e-12)
        per_sample = per_sample * snr.clamp(max=config.snr_gamma) / (snr + 1)  # min-SNR for v-prediction
    return per_sample.mean()


# Options that do not change what a step computes, or that a resumed run is expected to change; the number of
# processes is compared as the run saw it ("processes"), since torchrun can start them without --nproc.
_RESUME_NEUTRAL = frozenset({"resume_from_checkpoint", "max_train_steps", "output_dir", "checkpointing_steps",
                             "checkpoints_total_limit", "report_to", "dataloader_num_workers", "bad_data", "device",
                             "nproc", "accelerate_config"})


def changed_options(trainer_state: dict, config: TrainConfig, mask_config, world_size: int) -> list[str]:
    """"FIELD OLD -> NEW" for each option of `config`, value of the mask config, and the number of processes
    that differs from the run that wrote a checkpoint (`trainer_state`, as `save_checkpoint` wrote it).
    Fields a checkpoint predates are not compared; a mask ratio left out shows as "-> none"."""

    def flat(values: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in values.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
        return out

    def show(value) -> str:
        return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    saved = {**flat(trainer_state.get("config", {})), **flat(trainer_state.get("mask_config_values", {}), "mask "),
             **({"processes": trainer_state["world_size"]} if "world_size" in trainer_state else {})}
    # through JSON, as the checkpoint was: paths become strings, tuples lists
    current = {**flat(json.loads(json.dumps(_loggable(config), default=str))),
               **flat(mask_config.model_dump(mode="json"), "mask "), "processes": world_size}
    dropped = {key: None for key in saved if key.startswith("mask ") and key not in current}  # a ratio left out
    return [f"{key} {show(saved[key])} -> {show(value)}" for key, value in {**current, **dropped}.items()
            if key in saved and key not in _RESUME_NEUTRAL and saved[key] != value]


def _apply_hyperparameters(optimizer, lr_scheduler, config: TrainConfig) -> None:
    """A checkpoint restores the optimiser's state (moments, step counts); the hyperparameters are this run's
    (so `--learning-rate` on a resumed run takes effect)."""
    lr_scheduler.base_lrs = [config.learning_rate] * len(optimizer.param_groups)
    factor = lr_scheduler.lr_lambdas[0](lr_scheduler.last_epoch)
    for group in optimizer.param_groups:
        group.update(lr=config.learning_rate * factor, initial_lr=config.learning_rate, eps=config.adam_epsilon,
                     betas=(config.adam_beta1, config.adam_beta2), weight_decay=config.adam_weight_decay)
    lr_scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _npu() -> bool:
    try:
        import torch_npu  # noqa: F401
    except ImportError:
        return False
    return True


def _loggable(config: TrainConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in config.model_dump().items()}

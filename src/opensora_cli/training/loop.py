"""The training loop: fine-tune the inpainting transformer with masks drawn from a mask config.

`train` runs the phases setup, models, data, optimiser (with the resume), loop, result; the loss of one
micro-batch is `_loss`. Side effects (checkpoints, logs) happen on the main process only. A bad file met by a
DataLoader worker comes back as data (`data.dataset.ErrorsAsItems`) and is raised here with the last checkpoint;
Ctrl-C becomes `TrainingInterrupted`. Resuming with other options is allowed (a new learning rate is a common
reason to resume) but reported, field by field.

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
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from opensora_cli.errors import InputError, ModelLoadError, TrainingDiverged, TrainingInterrupted
from opensora_cli.schemas.defaults import model_defaults
from opensora_cli.schemas.train import LatentCacheStats, TrainConfig, TrainResult
from opensora_cli.utils.seeds import stable_seed

if TYPE_CHECKING:
    from opensora_cli.schemas.events import TrainReporter


def step_generator(seed: int, step: int, micro: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of every random draw of one micro-batch on one rank (see the module docstring)."""
    return torch.Generator(device).manual_seed(stable_seed(seed, step, micro, rank, namespace="opensora-train"))


@dataclass
class TrainState:
    """A run in progress: what the loop advances, checkpoints record and Ctrl-C reports."""

    step: int | None = None  # optimisation steps done; None while setting up
    first_step: int = 0  # where this run started (a resumed run: the checkpoint's step)
    checkpoint: Path | None = None  # the newest checkpoint: the one resumed from, then each one saved
    losses: list[float] = field(default_factory=list)
    samples: int = 0  # seen by all processes


@dataclass
class Frozen:
    """What a step uses besides the transformer: frozen encoders, the mask compressor and the noise schedule.

    `dtype` and `device` are the frozen models' (the compute dtype); noise and targets stay fp32.
    """

    vae: Any  # models.autoencoder_wfvae.WFVAEModel
    text_encoder: Any  # models.text_encoder.TextEncoder
    compressor: Any  # masks.compressor.MaskCompressor
    noise_scheduler: Any  # a diffusers DDPMScheduler
    dtype: torch.dtype
    device: torch.device
    noise_adder: Any = None  # masks.noise.GaussianNoiseAdder, with --add-noise-to-condition
    cache: Any = None  # training.latent_cache.LatentCache, with --latent-cache-mib
    lora_base: dict | None = None  # with --lora-rank: the base model's identity (services.lora.base_identity)


def train(config: TrainConfig, dirs: dict[str, Path], reporter: TrainReporter) -> TrainResult:
    """Run (or resume) a training run.

    Args:
        config: the validated options.
        dirs: "vae", "text_encoder" and optionally "transformer" model folders.
        reporter: receives the progress events (`schemas.events.SilentTrainReporter` for none).

    Raises:
        TrainingInterrupted: on Ctrl-C (KeyboardInterrupt), with the step reached and the last checkpoint.
        TrainingDiverged: the loss became NaN or infinite (nothing is saved then).
        InputError: bad data (the file, what is wrong, the last checkpoint), bad options.
    """
    state = TrainState()
    try:
        return _train(config, dirs, reporter, state)
    except KeyboardInterrupt:
        raise TrainingInterrupted(state.step, state.checkpoint, config.output_dir) from None


_LR_SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}  # diffusers' names


def _train(config: TrainConfig, dirs: dict[str, Path], reporter: TrainReporter, state: TrainState) -> TrainResult:
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from torch.utils.data import DataLoader

    from opensora_cli.data.dataset import ErrorsAsItems, collate
    from opensora_cli.training.checkpointing import find_checkpoint, load_checkpoint, save_checkpoint

    # 1. Setup. The checkpoint to resume from is found first, so that Ctrl-C while loading can point to it.
    state.checkpoint = find_checkpoint(config.output_dir, config.resume_from_checkpoint)
    accelerator = _accelerator(config)
    rank, world = accelerator.process_index, accelerator.num_processes

    # 2. Models: the transformer to train in fp32 (mixed precision autocasts its forward), the rest frozen; with
    # LoRA the transformer is frozen too, in the compute dtype, and only its adapter (fp32) trains
    transformer, frozen = _models(config, dirs, accelerator, reporter)
    trainable = [p for p in transformer.parameters() if p.requires_grad]
    if accelerator.is_main_process:
        reporter.phase(_parameter_report(transformer, trainable, config))

    # 3. Data: buckets of one size, each rank its share of every global batch
    mask_config, dataset, sampler = _data(config, rank, world)
    if accelerator.is_main_process:
        reporter.data_report(dataset.summary(), dataset.problems, sampler.small_buckets)

    # 4. Optimiser and EMA, restored from the checkpoint; then the LR warm-up at the step reached
    hyperparameters = dict(lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                           weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    optimizer = torch.optim.AdamW(trainable, **hyperparameters)
    # accelerate's wrapper steps only when gradients sync; checkpoints and the LR schedule hold `optimizer` itself
    model, accelerated = accelerator.prepare(transformer, optimizer)
    ema = EMAModel(trainable, decay=config.ema_decay) if config.use_ema else None  # (LoRA: of the adapter)
    if ema is not None:
        ema.to(frozen.device)
    if state.checkpoint is not None:
        saved = load_checkpoint(state.checkpoint, transformer, optimizer, ema, trainable, lora=frozen.lora_base)
        state.first_step = saved["step"]
        reporter.phase(f"resumed from {state.checkpoint} at step {state.first_step}")
        changed = changed_options(saved, config, mask_config, world)
        if changed:
            reporter.warning(f"{state.checkpoint} was trained with other options; this run uses the new values: "
                             + ", ".join(changed))
    for group in optimizer.param_groups:  # a checkpoint restores moments and counts; the hyperparameters are ours
        group.update(hyperparameters, initial_lr=config.learning_rate)
    # diffusers' warm-up, as the reference trains: step s + 1 at s / warmup of the rate (the first step at 0);
    # then constant, or a decay that reaches 0 at max_train_steps (a decayed rate averages out the gradient noise
    # a constant one leaves in the weights). Built at the step reached (last_epoch = steps taken - 1), so a
    # resumed run continues the same curve.
    lr_scheduler = get_scheduler(_LR_SCHEDULES[config.lr_scheduler], optimizer,
                                 num_warmup_steps=config.lr_warmup_steps, num_training_steps=config.max_train_steps,
                                 last_epoch=state.first_step - 1)
    state.step = state.first_step
    sampler.set_position(*sampler.position_after(state.step * config.gradient_accumulation_steps))
    # Workers hand a bad file back as an item (raised below, in this process): see ErrorsAsItems.
    loader = DataLoader(ErrorsAsItems(dataset), batch_sampler=sampler, num_workers=config.dataloader_num_workers,
                        collate_fn=collate, persistent_workers=config.dataloader_num_workers > 0)
    if state.step >= config.max_train_steps:
        return TrainResult(steps=state.step, first_step=state.first_step, last_checkpoint=state.checkpoint)

    # 5. Loop; a checkpoint is a model bundle (with links to the frozen models) that `sample --model` loads
    links = {"vae": dirs["vae"], "text_encoder": dirs["text_encoder"]}
    if frozen.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    reporter.start(config.max_train_steps, state.step)
    batches = iter(loader)
    micro, step_started = 0, time.perf_counter()
    run_started = step_started
    while state.step < config.max_train_steps:
        batch = next(batches)
        if "error" in batch:
            raise InputError(f"{batch['error']}; last checkpoint: {state.checkpoint or 'none'}")
        if batch["replaced"]:
            reporter.replaced(batch["replaced"])
        generator = step_generator(config.seed, state.step, micro, rank, frozen.device)
        with accelerator.accumulate(model):
            loss = _loss(model, frozen, batch, config, generator)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.deepspeed is None:  # DeepSpeed clips in its own step
                accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            accelerated.step()
            accelerated.zero_grad(set_to_none=True)
        state.samples += batch["pixel_values"].shape[0] * world
        micro += 1
        if not accelerator.sync_gradients:
            continue

        # one optimisation step done
        micro = 0
        lr_scheduler.step()
        if ema is not None:
            ema.step(trainable)
        state.step += 1
        loss_value = accelerator.reduce(loss.detach().float(), reduction="mean").item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"the loss became {loss_value} at step {state.step}; stopped without saving — the "
                                   f"last good checkpoint is {state.checkpoint or 'none (no checkpoint yet)'}")
        now = time.perf_counter()
        seconds, step_started = now - step_started, now
        lr = lr_scheduler.get_last_lr()[0]
        state.losses.append(loss_value)
        reporter.step(state.step, loss_value, seconds, state.samples / (now - run_started), lr)
        if config.report_to:
            accelerator.log({"train_loss": loss_value, "lr": lr}, step=state.step)
        if state.step % config.checkpointing_steps == 0 or state.step == config.max_train_steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                epoch, batch_index = sampler.position_after(state.step * config.gradient_accumulation_steps)
                run = {"loss": loss_value, "epoch": epoch, "batch": batch_index, "world_size": world,
                       "config": _loggable(config), "mask_config_values": mask_config.model_dump(mode="json")}
                state.checkpoint = save_checkpoint(config.output_dir, state.step, transformer, optimizer,
                                                   lr_scheduler, ema, run, links, config.checkpoints_total_limit,
                                                   defaults=sampling_defaults(config), params=trainable,
                                                   lora=frozen.lora_base)
                reporter.checkpoint(state.checkpoint)
            accelerator.wait_for_everyone()

    # 6. Result
    elapsed = time.perf_counter() - run_started
    cache = frozen.cache
    result = TrainResult(
        steps=state.step, first_step=state.first_step, last_checkpoint=state.checkpoint, losses=state.losses,
        seconds_per_step=elapsed / max(1, state.step - state.first_step),
        samples_per_second=state.samples / elapsed if elapsed else 0.0,
        peak_memory_gib=torch.cuda.max_memory_allocated() / 2**30 if frozen.device.type == "cuda" else None,
        latent_cache=None if cache is None else LatentCacheStats(
            hits=cache.hits, misses=cache.misses, entries=len(cache), mib=round(cache.bytes / 2**20, 1)),
        trainable_parameters=sum(p.numel() for p in trainable),
        parameters=sum(p.numel() for p in transformer.parameters()),
        lora_base=None if frozen.lora_base is None else (
            Path(config.model) if "transformer" in dirs else config.output_dir / "base"),
    )
    if world > 1:  # every rank past its collectives before the group goes (with the DDP model, at return)
        from opensora_cli.distributed.device import drain

        drain()
    accelerator.end_training()
    return result


# ------------------------------------------------------------------------------------------------------------
# The phases
# ------------------------------------------------------------------------------------------------------------


def _accelerator(config: TrainConfig):
    """accelerate decides devices and processes (from the torchrun / accelerate launch environment)."""
    from accelerate import Accelerator

    from opensora_cli.distributed.device import resolve_device

    deepspeed_plugin = None
    if config.deepspeed == "zero2":
        from accelerate.utils import DeepSpeedPlugin

        deepspeed_plugin = DeepSpeedPlugin(zero_stage=2, gradient_clipping=config.max_grad_norm)
    cpu = resolve_device(config.device).type == "cpu"
    accelerator = Accelerator(mixed_precision=config.mixed_precision or ("no" if cpu else "bf16"),
                              gradient_accumulation_steps=config.gradient_accumulation_steps, log_with=config.report_to,
                              project_dir=str(config.output_dir), cpu=cpu, deepspeed_plugin=deepspeed_plugin)
    if accelerator.is_main_process:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        if config.report_to:
            accelerator.init_trackers("opensora-train", config=_loggable(config))
    return accelerator


def build_transformer(config: TrainConfig, dirs: dict[str, Path]):
    """The model to train, in fp32 (mixed precision autocasts the forward).

    Returns:
        (model, note): an `OpenSoraInpaint_v1_3`, and a line saying where its weights came from.
    """
    from opensora_cli.models.loading import init_from_pretrained, load_pretrained
    from opensora_cli.models.transformer_opensora import OpenSoraInpaint_v1_3

    if "transformer" in dirs:  # continue training a saved inpaint model
        return load_pretrained(OpenSoraInpaint_v1_3, dirs["transformer"]), f"loaded {dirs['transformer']}"
    from opensora_cli.models.registry import build

    with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only
        torch.manual_seed(config.seed)
        model = build(config.model)
    if not isinstance(model, OpenSoraInpaint_v1_3):
        raise InputError(f"model: {config.model} is not an inpainting transformer preset")
    if config.pretrained_transformer_model_path is None:
        return model, f"{config.model} with random weights (no pretrained transformer given)"
    return model, init_from_pretrained(model, config.pretrained_transformer_model_path)


def _models(config: TrainConfig, dirs: dict[str, Path], accelerator, reporter: TrainReporter):
    """(the transformer to train, in train mode; the `Frozen` rest, in the compute dtype)."""
    from opensora_cli.distributed.device import torch_dtype
    from opensora_cli.masks.compressor import MaskCompressor
    from opensora_cli.masks.noise import GaussianNoiseAdder
    from opensora_cli.models.autoencoder_wfvae import WFVAEModel
    from opensora_cli.models.loading import load_pretrained
    from opensora_cli.models.text_encoder import TextEncoder
    from opensora_cli.pipelines.schedulers import make_scheduler

    reporter.phase("loading models")
    device, dtype = accelerator.device, torch_dtype(accelerator.mixed_precision)
    # pad to the batch's longest caption: same loss as 512 padded slots, a fraction of the work
    text_encoder = TextEncoder.from_pretrained(dirs["text_encoder"], dtype=dtype, device=device, padding="longest")
    vae = load_pretrained(WFVAEModel, dirs["vae"], dtype=dtype, device=device).requires_grad_(False)
    transformer, note = build_transformer(config, dirs)
    reporter.phase(note)
    if transformer.config.caption_channels != text_encoder.hidden_size:
        raise ModelLoadError(f"the text encoder gives {text_encoder.hidden_size}-wide states, the transformer "
                             f"expects {transformer.config.caption_channels}")
    lora_base = None
    if config.lora:
        from opensora_cli.models.lora import add_lora, lora_config
        from opensora_cli.training.checkpointing import lora_base_folder

        base_dir, lora_base = lora_base_folder(config, dirs, transformer, accelerator, sampling_defaults(config))
        if base_dir != dirs.get("transformer"):
            reporter.phase(f"the base model is in {base_dir.parent} (sample with --model {base_dir.parent})")
        # frozen: kept in the compute dtype (bf16 on accelerators), no fp32 master copy (nn.Module's `to`:
        # diffusers' own warns about fp32 modules this model does not have)
        torch.nn.Module.to(transformer, dtype)
        add_lora(transformer, lora_config(transformer, config.lora_rank, config.lora_alpha, config.lora_dropout,
                                          config.lora_targets, config.train_modules), config.seed)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    cache = None
    if config.latent_cache_mib:  # the schema makes sure the encoding is the (deterministic) posterior mean
        from opensora_cli.training.latent_cache import LatentCache

        cache = LatentCache(vae.encode_latents, config.latent_cache_mib * 2**20)
    return transformer.train(), Frozen(
        vae, text_encoder, MaskCompressor(*vae.vae_scale_factor),
        # the schedule sampling uses (zero terminal SNR), so the noise, targets and SNR weights match inference
        make_scheduler("DDPM"), dtype, device,
        noise_adder=GaussianNoiseAdder.for_training() if config.add_noise_to_condition else None, cache=cache,
        lora_base=lora_base,
    )


def sampling_defaults(config: TrainConfig) -> dict:
    """`opensora sample`'s defaults for a model trained so: those of the base bundle it started from (its
    `opensora_defaults.json`: the demo model's plain prompts, 25 steps, CFG 2, ...; a fine-tune samples as
    its base did), with the frames and the area range this run saw. The base's fixed size is kept only when it
    lies in that range."""
    trained = {"num_frames": config.num_frames, "max_hxw": config.max_hxw,
               "max_hxw_range": [config.effective_min_hxw(), config.max_hxw]}
    try:
        inherited = dict(model_defaults(config.model))
    except InputError:  # a broken file: `sample` on that base names it; the checkpoint keeps the trained ones
        inherited = {}
    height, width = inherited.get("height"), inherited.get("width")
    if not (isinstance(height, int) and isinstance(width, int)
            and config.effective_min_hxw() <= height * width <= config.max_hxw):
        for key in ("height", "width", "crop_for_hw"):
            inherited.pop(key, None)
    return {**inherited, **trained}


def _percent(part: int, whole: int) -> str:
    """"100 %", "2.5 %", "0.041 %": two significant digits, never in exponent form ("1e+02 %" was 100 %)."""
    share = 100 * part / max(1, whole)
    return f"{share:.0f} %" if share >= 10 else f"{share:.2g} %" if share >= 0.001 else "< 0.001 %"


def _parameter_report(transformer, trainable: list, config: TrainConfig) -> str:
    """"training N of M parameters (x %, what); ..." with the memory of the weights and of what the optimiser
    and EMA keep for the trained ones (activations come on top)."""
    from opensora_cli.schemas.train import training_state_bytes

    total = sum(p.numel() for p in transformer.parameters())
    count = sum(p.numel() for p in trainable)
    weights = sum(p.numel() * p.element_size() for p in transformer.parameters())
    what = f"LoRA rank {config.lora_rank} on {config.lora_targets}" if config.lora else "all weights"
    if config.train_modules:
        what += " + " + ", ".join(config.train_modules)
    return (f"training {count:,} of {total:,} parameters ({_percent(count, total)}, {what}); weights "
            f"{weights / 2**20:,.1f} MiB, gradients and AdamW state{' and EMA' if config.use_ema else ''} "
            f"{training_state_bytes(count, config.use_ema) / 2**20:,.1f} MiB")


def _data(config: TrainConfig, rank: int, world: int):
    """(the mask config, the dataset, the bucket batch sampler of this rank)."""
    from opensora_cli.data.bucketing import BucketBatchSampler
    from opensora_cli.data.dataset import VideoTextDataset
    from opensora_cli.schemas.mask_config import MaskConfig, load_mask_config

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
    return mask_config, dataset, sampler


# ------------------------------------------------------------------------------------------------------------
# The loss
# ------------------------------------------------------------------------------------------------------------


def draw_timesteps(config: TrainConfig, num_train_timesteps: int, batch_size: int, generator: torch.Generator,
                   device: torch.device | str) -> torch.Tensor:
    """(batch_size,) int64 training timesteps in [0, num_train_timesteps), higher = noisier.

    "uniform" draws integers as the reference does (and as every run before the option: same generator, same
    steps). The others draw u in (0, 1) from diffusers' `compute_density_for_timestep_sampling` (the SD3 paper's
    logit-normal and mode densities) and take timestep floor(u * N): with a DDPM schedule a larger u is more
    noise, so `--logit-mean 0.5` spends more of training where the video's layout is decided."""
    if config.timestep_sampling == "uniform":
        return torch.randint(0, num_train_timesteps, (batch_size,), generator=generator, device=device)
    from diffusers.training_utils import compute_density_for_timestep_sampling

    u = compute_density_for_timestep_sampling(config.timestep_sampling, batch_size, logit_mean=config.logit_mean,
                                              logit_std=config.logit_std, mode_scale=config.mode_scale,
                                              device=device, generator=generator)
    return (u * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)


def _loss(model, frozen: Frozen, batch: dict, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """v-prediction loss of one micro-batch (optionally min-SNR weighted), noise and targets in fp32.

    Args:
        model: the transformer (as accelerate wrapped it).
        frozen: the encoders, mask compressor and noise schedule.
        batch: a `data.dataset.collate` batch: "pixel_values" and "masked_pixel_values" (B, 3, T, H, W) in
            [-1, 1] on the host, "mask" (B, 1, T, H, W) with 1 = generate, "caption" (B strings).
        config: `vae_sample_posterior`, `snr_gamma` and the timestep sampling options are read.
        generator: every random draw of the micro-batch (see `step_generator`).

    Returns:
        The mean loss, a scalar.
    """
    from diffusers.training_utils import compute_snr

    device, dtype, cache, scheduler = frozen.device, frozen.dtype, frozen.cache, frozen.noise_scheduler
    mask = batch["mask"].to(device, dtype)  # (B, 1, T, H, W), 1 = generate
    pixels = batch["pixel_values"]  # (B, 3, T, H, W), on the host (the cache hashes it there)
    masked = batch["masked_pixel_values"]  # (B, 3, T, H, W), unknown frames -1

    def encode(x: torch.Tensor) -> torch.Tensor:
        return frozen.vae.encode_latents(x.to(device, dtype), sample_posterior=config.vae_sample_posterior,
                                         generator=generator).float()

    with torch.no_grad():
        if frozen.noise_adder is not None:
            masked = frozen.noise_adder(masked.to(device, dtype), mask, generator)
        if cache is None:
            latents, condition = encode(pixels), encode(masked)
        elif frozen.noise_adder is None:  # posterior means of inputs seen before come from memory (same values)
            latents, condition = cache(pixels, masked, device=device, dtype=dtype)
        else:  # noisy conditions never repeat: only the clean clips are worth caching
            (latents,) = cache(pixels, device=device, dtype=dtype)
            condition = encode(masked)
        latent_mask = frozen.compressor(mask).float()  # (B, 4, T', h, w)
        text, text_mask = frozen.text_encoder(batch["caption"])  # (B, 1, L, C), (B, 1, L)

    batch_size = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device=device)
    timesteps = draw_timesteps(config, scheduler.config.num_train_timesteps, batch_size, generator, device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = scheduler.get_velocity(latents, noise, timesteps)  # v = sqrt(alpha_bar) noise - sqrt(1 - alpha_bar) x0

    model_input = torch.cat([noisy, condition, latent_mask], dim=1)  # (B, 20, T', h, w)
    prediction = model(model_input, timesteps, encoder_hidden_states=text, encoder_attention_mask=text_mask,
                       return_dict=False)[0]
    per_sample = F.mse_loss(prediction.float(), target, reduction="none").mean(dim=(1, 2, 3, 4))
    if config.snr_gamma is not None:  # min-SNR for v-prediction: min(SNR, gamma) / (SNR + 1)
        snr = compute_snr(scheduler, timesteps)
        per_sample = per_sample * snr.clamp(max=config.snr_gamma) / (snr + 1)
    return per_sample.mean()


# ------------------------------------------------------------------------------------------------------------
# Resuming with other options
# ------------------------------------------------------------------------------------------------------------


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
    # a decaying rate reaches 0 at max_train_steps: another length bends the rest of the curve
    neutral = _RESUME_NEUTRAL - ({"max_train_steps"} if config.lr_scheduler != "constant" else set())
    return [f"{key} {show(saved[key])} -> {show(value)}" for key, value in {**current, **dropped}.items()
            if key in saved and key not in neutral and saved[key] != value]


def _loggable(config: TrainConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in config.model_dump().items()}

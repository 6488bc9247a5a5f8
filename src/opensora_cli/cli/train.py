"""`opensora train`: fine-tune the inpainting transformer with a mask config, on accelerate."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from opensora_cli.cli.common import VerboseOption, console, state


def _opt(*names: str, help: str, **kwargs):
    return typer.Option(None, *names, help=help, **kwargs)


def train_command(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML of training options (keys = flag names "
                                          "with _); flags override it."),
    data: Optional[Path] = _opt("--data", help="Text file of 'VIDEO_ROOT,ANNOTATION.json' lines."),
    mask_config: Optional[Path] = _opt("--mask-config", help="Mask config YAML [default: the reference's mix]."),
    default_text_ratio: Optional[float] = _opt("--default-text-ratio", help="Dropped captions: share replaced by "
                                               "the default sentence (rest empty) [0.5]."),
    cfg: Optional[float] = _opt("--cfg", help="Share of captions dropped for classifier-free guidance [0.1]."),
    add_noise_to_condition: Optional[bool] = _opt("--add-noise-to-condition/--no-noise-to-condition",
                                                  help="Log-normal noise on kept frames [off]."),
    pretrained_transformer_model_path: Optional[Path] = _opt(
        "--pretrained-transformer-model-path", help="Initial weights: an inpaint or text-to-video transformer "
        "folder, or a .safetensors file."),
    model: Optional[str] = _opt("--model", help="Architecture preset, or a transformer/bundle folder to continue "
                                "[OpenSoraInpaint_v1_3-2B/122]."),
    vae: Optional[Path] = _opt("--vae", help="WF-VAE folder."),
    text_encoder: Optional[Path] = _opt("--text-encoder", help="mT5/T5 encoder folder."),
    num_frames: Optional[int] = _opt("--num-frames", help="Frames per clip, 1 + 4k [93]."),
    max_hxw: Optional[int] = _opt("--max-hxw", help="Largest area of a bucket [236544]."),
    min_hxw: Optional[int] = _opt("--min-hxw", help="Smallest area kept [max-hxw / 4]."),
    hw_stride: Optional[int] = _opt("--hw-stride", help="Bucket sizes are multiples of this [32]."),
    train_fps: Optional[float] = _opt("--train-fps", help="Frames per second clips are resampled to [18]."),
    learning_rate: Optional[float] = _opt("--learning-rate", help="AdamW learning rate [1e-5]."),
    lr_warmup_steps: Optional[int] = _opt("--lr-warmup-steps", help="Linear warm-up steps [0]."),
    lr_scheduler: Optional[str] = _opt("--lr-scheduler", help="After the warm-up: constant, or cosine / linear "
                                       "decay to 0 at --max-train-steps [constant]."),
    max_train_steps: Optional[int] = _opt("--max-train-steps", help="Optimisation steps [1000]."),
    gradient_accumulation_steps: Optional[int] = _opt("--gradient-accumulation-steps", help="[1]"),
    train_batch_size: Optional[int] = _opt("--train-batch-size", help="Clips per process per micro-batch [1]."),
    mixed_precision: Optional[str] = _opt("--mixed-precision", help="no, fp16 or bf16 [bf16 on GPU/NPU]."),
    vae_sample_posterior: Optional[bool] = _opt(
        "--vae-sample-posterior/--vae-posterior-mean",
        help="Encode clips with posterior samples (the reference) or the posterior mean [sample]."),
    latent_cache_mib: Optional[int] = _opt(
        "--latent-cache-mib", help="Keep VAE latents of repeated inputs in this much host memory, for small data "
        "on a CPU; needs --vae-posterior-mean [0: off]."),
    gradient_checkpointing: Optional[bool] = _opt("--gradient-checkpointing/--no-gradient-checkpointing",
                                                  help="Recompute block activations in the backward pass."),
    lora_rank: Optional[int] = _opt("--lora-rank", help="Train a LoRA adapter of this rank (e.g. 16) on the frozen "
                                    "transformer instead of all its weights; checkpoints hold the adapter."),
    lora_alpha: Optional[float] = _opt("--lora-alpha", help="LoRA alpha: the update is scaled by alpha / rank "
                                       "[the rank]."),
    lora_dropout: Optional[float] = _opt("--lora-dropout", help="Dropout on the adapter's input [0]."),
    lora_targets: Optional[str] = _opt("--lora-targets", help="Layers that get an adapter: attn (self- and "
                                       "cross-attention), attn+ff, or all-linear [attn]."),
    train_modules: Optional[str] = _opt("--train-modules", help="Modules trained whole beside the adapter, "
                                        "comma-separated; 'inpaint' = the inpaint input branches."),
    use_ema: Optional[bool] = _opt("--use-ema/--no-ema", help="Keep an EMA of the weights (saved for sampling)."),
    ema_decay: Optional[float] = _opt("--ema-decay", help="[0.9999]"),
    checkpointing_steps: Optional[int] = _opt("--checkpointing-steps", help="Save every N steps [500]."),
    checkpoints_total_limit: Optional[int] = _opt("--checkpoints-total-limit", help="Keep the newest N."),
    resume_from_checkpoint: Optional[str] = _opt("--resume-from-checkpoint", help="'latest' or a checkpoint "
                                                 "folder."),
    snr_gamma: Optional[float] = _opt("--snr-gamma", help="Min-SNR loss weighting gamma (e.g. 5)."),
    timestep_sampling: Optional[str] = _opt("--timestep-sampling", help="Where training timesteps fall: uniform, "
                                            "logit_normal (--logit-mean > 0 leans to heavy noise) or mode "
                                            "[uniform]."),
    logit_mean: Optional[float] = _opt("--logit-mean", help="logit_normal: mean of the normal [0]."),
    logit_std: Optional[float] = _opt("--logit-std", help="logit_normal: its standard deviation [1]."),
    mode_scale: Optional[float] = _opt("--mode-scale", help="mode: how far draws bend to the middle [1.29]."),
    output_dir: Optional[Path] = _opt("--output-dir", help="Checkpoints and logs [train_output]."),
    seed: Optional[int] = _opt("--seed", help="[1234]"),
    device: Optional[str] = _opt("--device", help="cpu, cuda or npu."),
    nproc: Optional[int] = _opt("--nproc", help="Processes on this machine (torch's elastic launcher)."),
    deepspeed: Optional[str] = _opt("--deepspeed", help="zero2 (needs the deepspeed extra)."),
    accelerate_config: Optional[Path] = _opt("--accelerate-config", help="accelerate config file (multi-node)."),
    report_to: Optional[str] = _opt("--report-to", help="tensorboard."),
    bad_data: Optional[str] = _opt("--bad-data", help="skip (report and go on) or error [skip]."),
    dataloader_num_workers: Optional[int] = _opt("--dataloader-num-workers", help="[2]"),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    verbose: bool = VerboseOption,
) -> None:
    """Fine-tune the inpainting transformer; checkpoints load straight into `opensora sample --model`."""
    overrides = {k: v for k, v in locals().items() if k not in ("config", "json_output", "verbose")}
    from opensora_cli.distributed.launch import is_distributed_child, launch
    from opensora_cli.services.training import check_train_request

    lead = os.environ.get("RANK", "0") == "0"
    train_config, dirs, problems = check_train_request(config, overrides)
    if problems:
        if lead:
            from opensora_cli.cli.render import print_problems

            out = console()
            print_problems(problems, out, "problem", "red")
            out.print(f"[red]{len(problems)} problem(s)[/red]; nothing was loaded or trained.")
        raise typer.Exit(1)

    if (train_config.nproc > 1 or train_config.accelerate_config) and not is_distributed_child():
        raise typer.Exit(launch(train_config.nproc, state.argv, accelerate_config=train_config.accelerate_config))

    from opensora_cli.cli.progress import RichTrainReporter
    from opensora_cli.errors import TrainingInterrupted
    from opensora_cli.services.training import run_training

    try:
        result = run_training(train_config, dirs, RichTrainReporter(enabled=lead))  # stderr: --json stays clean
    except TrainingInterrupted as exc:  # Ctrl-C is not an error: where it stopped and how to go on, exit 130
        if lead:
            print(exc, file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    if not lead:
        return
    if json_output:
        print(result.model_dump_json())
        return
    out = console()
    if result.steps == result.first_step:
        out.print(f"Nothing to do: already at step {result.steps} (checkpoint {result.last_checkpoint}).",
                  markup=False)
        return
    out.print(f"Trained steps {result.first_step + 1}-{result.steps}: {result.seconds_per_step:.3f} s/step, "
              f"{result.samples_per_second:.2f} samples/s, last loss {result.losses[-1]:.4f}"
              + (f", peak GPU memory {result.peak_memory_gib:.2f} GiB" if result.peak_memory_gib else "") + ".")
    if result.latent_cache:
        c = result.latent_cache
        total = c.hits + c.misses
        out.print(f"Latent cache: {c.hits} of {total} encodes reused ({100 * c.hits / max(1, total):.0f} %), "
                  f"{c.entries} latents in {c.mib} MiB.")
    if result.last_checkpoint:
        use = (f"--model {result.last_checkpoint}" if result.lora_base is None
               else f"--model {result.lora_base} --lora {result.last_checkpoint}")
        out.print(f"Last checkpoint: {result.last_checkpoint} — sample with: opensora sample {use} ...",
                  soft_wrap=True, markup=False)


"""`opensora train-vae`: train a small WF-VAE on a domain of one's own (e.g. `make-demo-data`'s shapes)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from opensora_cli.cli.common import VerboseOption, console


def train_vae_command(
    data: Path = typer.Option(..., "--data", help="Text file of 'VIDEO_ROOT,ANNOTATION.json' lines (as train)."),
    output_dir: Path = typer.Option(Path("vae_output"), "--output-dir", help="Where the VAE folder is written."),
    preset: str = typer.Option("WFVAEModel_D8_4x8x8-demo", "--preset", help="WF-VAE architecture preset."),
    init: Optional[Path] = typer.Option(None, "--init", help="Continue from this VAE folder instead of a preset."),
    num_frames: int = typer.Option(9, "--num-frames", help="Frames per training clip, 1 + 4k."),
    max_hxw: int = typer.Option(6144, "--max-hxw", help="Largest clip area."),
    min_hxw: int = typer.Option(1024, "--min-hxw", help="Smallest clip area kept."),
    hw_stride: int = typer.Option(16, "--hw-stride", help="Clip sizes are multiples of this."),
    train_fps: float = typer.Option(8.0, "--train-fps", help="Frames per second clips are resampled to."),
    train_batch_size: int = typer.Option(4, "--train-batch-size"),
    learning_rate: float = typer.Option(1e-3, "--learning-rate", help="Adam, cosine-decayed to 1 %."),
    max_train_steps: int = typer.Option(1500, "--max-train-steps"),
    kl_weight: float = typer.Option(1e-6, "--kl-weight", help="Weight of the KL term."),
    edge_weight: float = typer.Option(1.0, "--edge-weight", help="Weight of the L1 of spatial gradients."),
    foreground_weight: float = typer.Option(
        4.0, "--foreground-weight", help="Extra weight of pixels far from the clip's median colour."),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or npu."),
    mixed_precision: str = typer.Option("no", "--mixed-precision", help="no or bf16 (autocast; faster on GPUs "
                                        "and on CPUs with native bf16, e.g. AMX)."),
    dataloader_num_workers: int = typer.Option(2, "--dataloader-num-workers"),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    verbose: bool = VerboseOption,
) -> None:
    """Train a small WF-VAE (weighted reconstruction + edge + KL) and save it with calibrated latent scale/shift."""
    options = {k: v for k, v in locals().items() if k not in ("json_output", "verbose")}
    from opensora_cli.cli.progress import RichTrainReporter
    from opensora_cli.services.vae_training import train_vae

    result = train_vae(options, RichTrainReporter())
    if json_output:
        print(result.model_dump_json())
        return
    console().print(f"Saved {result.output}: {result.steps} steps, {result.seconds_per_step:.2f} s/step, "
                    f"reconstruction PSNR {result.psnr_db:.1f} dB on training clips.", soft_wrap=True,
                    markup=False)

"""`opensora init-model`: write random-weight model folders in the released layout."""

from __future__ import annotations

from pathlib import Path

import typer

from opensora_cli.cli.common import VerboseOption, console


def init_model_command(
    output_dir: Path = typer.Argument(..., help="Folder to write transformer/, vae/ and text_encoder/ into."),
    transformer: str = typer.Option("OpenSoraInpaint_v1_3-tiny", "--transformer", help="Preset, or 'none'."),
    vae: str = typer.Option("WFVAEModel_D8_4x8x8-tiny", "--vae", help="Preset, or 'none'."),
    text_encoder: str = typer.Option("t5-tiny", "--text-encoder", help="Preset (T5 + ByT5 tokenizer), or 'none'."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    verbose: bool = VerboseOption,
) -> None:
    """Random weights in the real architectures: try sample/train without downloads, or start a model of your own."""
    from opensora_cli.services.init_model import init_model

    presets = {"transformer": transformer, "vae": vae, "text_encoder": text_encoder}
    paths = init_model(output_dir, {k: (None if v == "none" else v) for k, v in presets.items()}, seed=seed)
    for kind, path in paths.items():
        console().print(f"{kind}: {path}", soft_wrap=True, markup=False)

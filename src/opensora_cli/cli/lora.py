"""`opensora lora merge`: a model folder with LoRA adapters fused into the transformer (see services/lora.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from opensora_cli.cli.common import VerboseOption, console

lora_app = typer.Typer(help="LoRA adapters: fuse them into a model folder.", no_args_is_help=True)


@lora_app.command("merge")
def merge_command(
    model: Optional[Path] = typer.Option(None, "--model", help="The base model folder the adapters were trained "
                                         "on [default: the bundled demo model]."),
    lora: list[str] = typer.Option(..., "--lora", metavar="DIR[:SCALE]", help="An adapter folder, DIR or DIR:SCALE; repeat for several."),
    lora_scale: float = typer.Option(1.0, "--lora-scale", help="The scale of each --lora given without one."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="The model folder to write (new or empty)."),
    dtype: str = typer.Option("base", "--dtype", metavar="base|fp32|bf16|fp16", help="The merged weights' dtype: "
                              "the base's, or fp32 for videos equal to `sample --lora` (fp32) up to float "
                              "summation order."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace what is in --output-dir."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    verbose: bool = VerboseOption,
) -> None:
    """Write a full model folder whose transformer has the adapters fused in: it samples as `sample --lora`
    does (within float rounding), with no adapter to load. The VAE and text encoder are linked, not copied."""
    from opensora_cli.errors import UsageError
    from opensora_cli.schemas.lora import LoraSpec
    from opensora_cli.services.lora import merge_lora

    try:
        specs = [LoraSpec.parse(value, lora_scale) for value in lora]
    except ValueError as exc:
        raise UsageError(f"--lora: {exc}") from None
    err = console(stderr=True)
    result = merge_lora(model, specs, output_dir, overwrite, dtype=dtype,
                        on_phase=lambda text: err.print(f"{text}...", style="dim", markup=False, soft_wrap=True))
    if json_output:
        print(json.dumps(result))
        return
    console().print(f"wrote {result['output_dir']} ({len(specs)} adapter(s) fused, {result['dtype']}) in {result['seconds']:.1f} s; "
                    f"sample with: opensora sample --model {result['output_dir']} ...", markup=False, soft_wrap=True)

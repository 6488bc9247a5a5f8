"""`opensora encode-prompts`: fill the text cache ahead of `opensora sample` (see services/text_cache.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from opensora_cli.cli.common import TextCacheOption, VerboseOption, console
from opensora_cli.cli.validate import PromptsOption
from opensora_cli.schemas.defaults import RELEASED


def encode_prompts_command(
    prompts: Path = PromptsOption,
    model: Optional[Path] = typer.Option(
        None, "--model", help="The model `sample` will use: its defaults (negative prompt, template, "
        "guidance) and its text encoder [default: the bundled demo model]."),
    text_encoder: Optional[Path] = typer.Option(
        None, "--text-encoder",
        help="mT5/T5 encoder folder [default: text_encoder/ or mt5-xxl/ next to --model]."),
    text_cache: Optional[Path] = TextCacheOption,
    negative_prompt: Optional[str] = typer.Option(
        None, "--negative-prompt",
        help="Negative prompt [default: the model's; the reference's]; '' for none."),
    prompt_template: Optional[bool] = typer.Option(
        None, "--prompt-template/--no-prompt-template", help="Wrap prompts in the reference's template "
        "[default: the model's; on for the released model]."),
    guidance_scale: Optional[float] = typer.Option(
        None, "--guidance-scale", help="As for `sample`: <= 1 encodes no negative prompt "
        f"[default: the model's; {RELEASED['guidance_scale']}]."),
    device: Optional[str] = typer.Option(
        None, "--device", help="cpu, cuda or npu, as `sample` will run [default: cuda, npu, cpu]."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="fp32, bf16 or fp16, as `sample` will run "
                                        "[default: fp32 on CPU, else bf16]."),
    quantize: str = typer.Option(
        "none", "--quantize", help="As `sample` will run: none, int8 or fp8 (a quantised encoder makes other "
        "states, cached apart). Needs the [quant] extra."),
    json_output: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    verbose: bool = VerboseOption,
) -> None:
    """Encode every prompt (and every '|||' stretch) into the text cache, so that `sample` with the same
    options does not load the text encoder. Entries are keyed by device type, dtype and --quantize: use the ones
    `sample` runs with."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from opensora_cli.services.text_cache import encode_prompts

    options = {"prompts": prompts, "model": model, "text_encoder": text_encoder, "text_cache": text_cache,
               "negative_prompt": negative_prompt, "prompt_template": prompt_template,
               "guidance_scale": guidance_scale, "device": device, "dtype": dtype, "quantize": quantize}
    err = console(stderr=True)
    progress = Progress(TextColumn("encoding prompts"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True,
                        disable=not err.is_terminal)  # (off a terminal a transient bar leaves an empty line)
    task = None

    def start(total: int) -> None:
        nonlocal task
        if total:
            progress.start()
            task = progress.add_task("prompts", total=total)

    try:
        summary = encode_prompts(options, on_start=start, on_done=lambda _: progress.advance(task))
    finally:
        if task is not None:  # (stopping a bar never started prints an empty line)
            progress.stop()
    if json_output:
        print(json.dumps({"prompts": summary.prompts, "computed": summary.computed, "cached": summary.cached,
                          "text_cache": str(summary.cache_dir), "device": summary.device,
                          "dtype": summary.dtype, "quantize": summary.quantize}))
        return
    console().print(f"{summary.prompts} prompt(s): {summary.computed} computed, {summary.cached} already "
                    f"cached, in {summary.cache_dir} ({summary.device}, {summary.dtype}"
                    f"{'' if summary.quantize == 'none' else ', ' + summary.quantize})", markup=False,
                    soft_wrap=True)

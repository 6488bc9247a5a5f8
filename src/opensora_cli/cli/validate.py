"""`opensora validate-inputs`: check prompt and condition files before any model work."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from opensora_cli.cli.common import VerboseOption, console, state
from opensora_cli.schemas.masks import MaskType
from opensora_cli.schemas.resolution import DEFAULT_MAX_HXW

PromptsOption = typer.Option(..., "--prompts", "-p", help="Prompts file: UTF-8, one prompt per line.")
CondsOption = typer.Option(None, "--conds", "-c", help="Conditions file, one line per prompt: an image, "
                           "comma-separated images (optionally path@frame), a video, or nothing (text only).")
# The choices go in the help text, where they wrap; as the metavar they overflow a narrow terminal.
MASK_TYPES = ", ".join(m.value for m in MaskType)
MaskTypeOption = typer.Option(
    None, "--mask-type", "-m", case_sensitive=False, metavar="<type>",
    help=f"Mask type for every line: {MASK_TYPES} [default: from each line's inputs].",
)
NumFramesOption = typer.Option(
    None, "--num-frames", "-n", help="Frames to generate: 1 + 4k [default: the model's; 93 for the released model].")
HeightOption = typer.Option(None, "--height", help="With --crop-for-hw or t2iv: output height, a multiple of 16.")
WidthOption = typer.Option(None, "--width", help="With --crop-for-hw or t2iv: output width, a multiple of 16.")
CropOption = typer.Option(
    None, "--crop-for-hw/--no-crop-for-hw", help="Fixed size: centre-crop and resize inputs to --height x --width "
    "[default: the model's; off for the released model].")
MaxHxwOption = typer.Option(
    None, "--max-hxw", help="Arbitrary-resolution mode: largest output area in pixels [default: the model's; "
    f"{DEFAULT_MAX_HXW} for the released model].")
ModelOption = typer.Option(
    None, "--model", help="The model whose defaults and trained sizes apply, as in `opensora sample` "
    "[default: the bundled demo model].")
MaskConfigOption = typer.Option(None, "--mask-config", help="Mask config YAML to check as well.")
OverlapOption = typer.Option(
    None, "--overlap", help="A video longer than the model's trained length is made in windows of that length: "
    "frames each window keeps of the one before, 1 + 4k [default: about a quarter window; 25 of 93].")


def validate_inputs_command(
    prompts: Path = PromptsOption,
    conds: Optional[Path] = CondsOption,
    mask_type: Optional[MaskType] = MaskTypeOption,
    num_frames: Optional[int] = NumFramesOption,
    height: Optional[int] = HeightOption,
    width: Optional[int] = WidthOption,
    crop_for_hw: Optional[bool] = CropOption,
    max_hxw: Optional[int] = MaxHxwOption,
    overlap: Optional[int] = OverlapOption,
    mask_config: Optional[Path] = MaskConfigOption,
    model: Optional[Path] = ModelOption,
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    verbose: bool = VerboseOption,
) -> None:
    """Check that prompts and conditions line up, every file decodes and the sizes fit.

    Exit code 0 when all is well, 1 when there are problems (all of them are listed).
    """
    from opensora_cli.cli.render import print_report
    from opensora_cli.services.validation import validate_inputs

    report = validate_inputs(dict(prompts=prompts, conds=conds, mask_type=mask_type, num_frames=num_frames,
                                  height=height, width=width, crop_for_hw=crop_for_hw, max_hxw=max_hxw,
                                  overlap=overlap, mask_config=mask_config, model=model))
    if json_output:
        print(report.model_dump_json(indent=None))
    else:
        print_report(report, console(), verbose=state.verbose)
    raise typer.Exit(0 if report.ok else 1)

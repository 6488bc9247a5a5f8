"""`opensora mask-preview`: show what a mask type keeps and generates."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from opensora_cli.cli.common import VerboseOption, console
from opensora_cli.cli.validate import MASK_TYPES, OverlapOption
from opensora_cli.schemas.masks import MaskType


def mask_preview_command(
    mask_type: Optional[MaskType] = typer.Option(
        None, "--mask-type", "-m", case_sensitive=False, metavar="<type>",
        help=f"Mask type to draw: {MASK_TYPES} [default: from --conds, or drawn from --mask-config].",
    ),
    num_frames: int = typer.Option(93, "--num-frames", "-n", help="Pixel frames: 1 + 4k."),
    height: Optional[int] = typer.Option(None, "--height", help="Frame height (multiple of 16) [default: 352]."),
    width: Optional[int] = typer.Option(None, "--width", help="Frame width (multiple of 16) [default: 640]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for random masks [default: random, printed]."),
    mask_config: Optional[Path] = typer.Option(
        None, "--mask-config", help="Draw types and kept shares as training does with this mask config YAML."
    ),
    samples: int = typer.Option(1, "--samples", "-k", help="How many masks to draw (one row each)."),
    conds: Optional[str] = typer.Option(
        None, "--conds", "-c",
        help="A conditions line ('a.png,b.png@40', 'clip.mp4') or a conds .txt file: kept frames show it.",
    ),
    line: int = typer.Option(1, "--line", help="With a conds .txt file: which line to show."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Also write a picture: .png (labelled grid), .gif or .mp4 (animation)."
    ),
    model: Optional[Path] = typer.Option(
        None, "--model", help="The model whose trained length windows a long --num-frames [default: the released "
        "model's 93]."),
    overlap: Optional[int] = OverlapOption,
    json_output: bool = typer.Option(False, "--json", help="Print the masks as JSON instead of a timeline."),
    verbose: bool = VerboseOption,
) -> None:
    """Show which frames a mask keeps (green) and which the model generates (grey)."""
    from opensora_cli.services.mask_preview import preview_masks

    result = preview_masks(dict(mask_type=mask_type, num_frames=num_frames, height=height, width=width, seed=seed,
                                mask_config=mask_config, samples=samples, conds=conds, line=line, out=out,
                                model=model, overlap=overlap))
    if json_output:
        import json

        first = result.samples[0]  # the first mask's fields at the top level, then every sample
        print(json.dumps({"mask_type": first.mask_type.value, "frames": first.frames,
                          "latent_shape": list(result.latent_shape), "latent_mask": first.latent_mask,
                          "seed": result.seed, "height": result.height, "width": result.width,
                          "samples": [s.model_dump(mode="json") for s in result.samples],
                          "out": str(result.out) if result.out else None,
                          **({"windows": [w.model_dump(mode="json") for w in result.windows]} if result.windows else {})}))
        return
    _print_timeline(result)


def _print_timeline(result) -> None:
    """One cell per frame (green = kept, grey = generated), wrapped to the terminal width with a ruler."""
    from rich.text import Text

    out = console()
    c, t, h, w = result.latent_shape
    out.print(
        f"[bold]{result.num_frames} frames[/bold], {result.height}x{result.width} -> latent mask {c}x{t}x{h}x{w}, "
        f"seed {result.seed}"
    )
    many = len(result.samples) > 1
    labels = [(f"{n:>2}. " if many else "") + str(s.mask_type) for n, s in enumerate(result.samples, start=1)]
    label_width = max(len(label) for label in [*labels, "latent"])
    span = max(10, (out.width - label_width - 2) // 10 * 10)
    for start in range(0, result.num_frames, span):
        stop = min(start + span, result.num_frames)
        ruler = "".join(f"{i:<10}"[: min(10, stop - i)] for i in range(start, stop, 10))
        out.print(Text(" " * (label_width + 2) + ruler, style="dim"), soft_wrap=True)
        for label, sample in zip(labels, result.samples):
            row = Text(f"{label:<{label_width}}  ")
            for value in sample.frames[start:stop]:
                row.append("█" if value == 0 else "░", style="green" if value == 0 else "grey50")
            if stop == result.num_frames:
                row.append(f"  keeps {sample.frames.count(0)}/{len(sample.frames)}", style="dim")
            out.print(row, soft_wrap=True)
    latent = Text(f"{'latent':<{label_width}}  ")
    for values in result.samples[0].latent_mask:
        share = sum(values) / len(values)
        latent.append("█" if share == 0 else "▒" if share < 1 else "░", style="green" if share < 1 else "grey50")
    out.print(latent, soft_wrap=True)
    out.print("█ kept  ░ generated  (latent row: one cell per latent frame" + (" of mask 1" if many else "")
              + ", ▒ partly kept)", style="dim")
    if result.windows:
        _print_windows(out, result.windows, result.num_frames, label_width, span)
    if result.conds:
        out.print(f"conditions: {', '.join(result.conds)}", soft_wrap=True, markup=False)
    if result.out:
        out.print(f"wrote {result.out}", soft_wrap=True, markup=False)


def _print_windows(out, windows, num_frames: int, label_width: int, span: int) -> None:
    """A row per window on the long timeline: ▓ kept from the window before, █ a keyframe, ░ generated."""
    from rich.text import Text

    out.print(f"{len(windows)} windows of {windows[0].frames} frames, each keeping {windows[-1].overlap} of the one "
              "before:", style="bold")
    for start in range(0, num_frames, span):
        stop = min(start + span, num_frames)
        ruler = "".join(f"{i:<10}"[: min(10, stop - i)] for i in range(start, stop, 10))
        out.print(Text(" " * (label_width + 2) + ruler, style="dim"), soft_wrap=True)
        for window in windows:
            if window.end <= start or window.start >= stop:
                continue
            row = Text(f"{'w' + str(window.index + 1):<{label_width}}  ")
            keyframes = {window.start + f for f, _ in window.keyframes}
            for frame in range(start, stop):
                if not window.start <= frame < window.end:
                    row.append(" ")
                elif frame in keyframes:
                    row.append("█", style="green")
                elif frame < window.start + window.overlap:
                    row.append("▓", style="cyan")
                else:
                    row.append("░", style="grey50")
            out.print(row, soft_wrap=True)
    out.print("▓ kept from the window before  █ keyframe  ░ generated", style="dim")

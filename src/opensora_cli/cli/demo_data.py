"""`opensora make-demo-data`: write the synthetic data set the demo model is trained and evaluated on."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from opensora_cli.cli.common import VerboseOption


def make_demo_data_command(
    out_dir: Path = typer.Argument(..., help="Folder to write (new or empty, unless --overwrite)."),
    clips: int = typer.Option(2000, "--clips", help="Training clips (videos/NNNNN.mp4)."),
    images: int = typer.Option(200, "--images", help="Training images (images/NNNNN.png)."),
    heldout: int = typer.Option(48, "--heldout", help="Held-out clips for evaluation (eval/)."),
    frames: int = typer.Option(17, "--frames", help="Frames per clip: 1 + 4k."),
    height: int = typer.Option(64, "--height", help="Frame height (multiple of 16, at least 32)."),
    width: int = typer.Option(96, "--width", help="Frame width (multiple of 16, at least 32)."),
    seed: int = typer.Option(0, "--seed", help="Everything is drawn from this seed: same seed, same data."),
    concept: str = typer.Option(
        "none", "--concept", help="The motions: none (left, right, up, down: the demo model's domain) or diagonal "
        "(up-left, up-right, down-left, down-right, a motion the demo model has never seen, e.g. for a LoRA)."),
    examples: Optional[Path] = typer.Option(
        None, "--examples", help="Also write four quick-start lines (prompts.txt, conds.txt and media) here."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into non-empty folders, replacing files."),
    verbose: bool = VerboseOption,
) -> None:
    """Write a synthetic data set: one coloured shape moving left, right, up or down over a dark background
    (with --concept diagonal: along a diagonal).

    OUT_DIR gets videos/, images/, annotation.json and data.txt (for `opensora train --data OUT_DIR/data.txt`)
    and eval/ (held-out first and last frames, prompts.txt, conds.txt, transition_conds.txt, metadata.json for
    benchmarks/demo_quality.py).
    """
    from opensora_cli.services.demo_data import make_demo_data

    options = dict(out_dir=out_dir, clips=clips, images=images, heldout=heldout, frames=frames, height=height,
                   width=width, seed=seed, concept=concept, examples=examples, overwrite=overwrite)
    bar = _ProgressBar()
    try:
        summary = make_demo_data(options, progress=bar.update)
    finally:
        bar.close()
    extra = f", examples in {summary['examples']}" if summary["examples"] else ""
    motion = f", {summary['concept']} motion" if summary["concept"] != "none" else ""  # none: the line as before
    print(
        f"wrote {summary['clips']} clips, {summary['images']} images and {summary['heldout']} held-out clips "
        f"({summary['frames']}x{summary['height']}x{summary['width']}{motion}) to {summary['out_dir']} in "
        f"{summary['seconds']:.1f} s{extra}; train with --data {summary['data_file']}"
    )


class _ProgressBar:
    """A transient rich bar on stderr, started by the first update (so errors come before any bar) and only on a
    terminal (pipes and logs get the summary line alone)."""

    progress = None  # before the first update; then a started rich Progress, or False off a terminal

    def update(self, done: int, total: int) -> None:
        if self.progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from opensora_cli.cli.common import console

            out = console(stderr=True)
            self.progress = out.is_terminal and Progress(TextColumn("writing"), BarColumn(), MofNCompleteColumn(),
                                                         TimeRemainingColumn(), console=out, transient=True)
            if self.progress:
                self.task = self.progress.add_task("", total=total)
                self.progress.start()
        if self.progress:
            self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()

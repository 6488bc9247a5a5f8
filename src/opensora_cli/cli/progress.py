"""Rich progress for long runs: one bar over videos, one over the current video's denoising steps.

Our styles are rich markup; text from outside (prompts, file names, messages) is escaped into it, so that
`clip[a].mp4` prints as written, and off a terminal (a log file) the tags are rendered away, never printed.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from opensora_cli.schemas.events import SampleReporter, TrainReporter


class RichReporter(SampleReporter):
    """Draws `schemas.events.SampleReporter` events on stderr (stdout stays clean for --json). Disabled: silent."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True, emoji=False)
        self.progress: Progress | None = None
        self._videos = self._steps = None
        self._step_started = 0.0
        self._step_seconds = 0.0

    def phase(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"[dim]{escape(text)}...[/dim]")

    def warning(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"[yellow]warning[/yellow]: {escape(text)}", soft_wrap=True)

    def start(self, videos: int, steps: int) -> None:
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),  # holds the prompt
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self._videos = self.progress.add_task("videos", total=videos, rate="")
        self._steps = self.progress.add_task("steps", total=steps, rate="")

    def video_started(self, line: int, sample: int, prompt: str) -> None:
        if self.progress is None:
            return
        short = prompt if len(prompt) <= 40 else prompt[:37] + "..."
        self.progress.reset(self._steps, description=f"line {line} #{sample}: {short}", rate="")
        self._step_started = time.perf_counter()

    def step(self, index: int, steps: int) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        self._step_seconds = (now - self._step_started) / (index + 1)
        self.progress.update(self._steps, completed=index + 1, total=steps, rate=f"{self._step_seconds:.2f} s/step")

    def video_done(self, result) -> None:
        if self.progress is not None:
            self.progress.advance(self._videos)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class RichTrainReporter(TrainReporter):
    """Draws training progress on stderr: a bar over steps with loss, step time and samples/s."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True, emoji=False)
        self.progress: Progress | None = None
        self._task = None

    def phase(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"[dim]{escape(text)}[/dim]", soft_wrap=True)

    def data_report(self, summary: dict, problems: list, small_buckets: dict) -> None:
        if not self.enabled:
            return
        self.console.print(f"data: {summary}", soft_wrap=True, markup=False)
        for problem in problems[:10]:
            self.console.print(f"[yellow]skipped[/yellow] {escape(f'{problem.path}: {problem.reason}')}",
                               soft_wrap=True)
        if len(problems) > 10:
            self.console.print(f"[yellow]... and {len(problems) - 10} more skipped records[/yellow]")
        for key, count in small_buckets.items():
            self.console.print(f"[yellow]bucket {key} has {count} sample(s), fewer than one global batch: not "
                               "used[/yellow]")

    def start(self, total_steps: int, first_step: int) -> None:
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
        )
        self.progress.start()
        self._task = self.progress.add_task("train", total=total_steps, completed=first_step, stats="")

    def step(self, step: int, loss: float, seconds: float, samples_per_second: float, lr: float) -> None:
        if self.progress is None:
            return
        stats = f"loss {loss:.4f}  {seconds:.2f} s/step  {samples_per_second:.2f} samples/s"
        self.progress.update(self._task, completed=step, stats=stats)
        total = self.progress.tasks[0].total or 1
        if not self.console.is_terminal and (step % max(1, int(total) // 20) == 0 or step == total):
            # Off a terminal (a log file) the bar is not redrawn: a line every 5 % instead.
            self.console.print(f"step {step}/{int(total)}: {stats}  lr {lr:.2e}", soft_wrap=True)

    def replaced(self, problems: list) -> None:
        if self.enabled:
            for problem in problems:
                self.console.print(f"[yellow]bad data[/yellow] {escape(str(problem))}", soft_wrap=True)

    def warning(self, text: str) -> None:
        if self.enabled:
            from rich.text import Text

            self.console.print(Text.assemble(("warning: ", "yellow"), text), soft_wrap=True)

    def checkpoint(self, path) -> None:
        if self.enabled:
            self.console.print(f"saved {path}", soft_wrap=True, markup=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

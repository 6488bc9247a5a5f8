"""Rich progress for long runs: one bar over videos, one over the current video's denoising steps."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from opensora_cli.services.sampling import Reporter


class RichReporter(Reporter):
    """Draws `services.sampling.Reporter` events on stderr (stdout stays clean for --json). Disabled: silent."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.progress: Progress | None = None
        self._videos = self._steps = None
        self._step_started = 0.0
        self._step_seconds = 0.0

    def phase(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"[dim]{text}...[/dim]")

    def start(self, videos: int, steps: int) -> None:
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn("{task.description}"),
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

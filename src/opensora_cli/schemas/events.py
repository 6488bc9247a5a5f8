"""Progress events of the long commands: what a run tells its caller while it works (torch-free).

A service takes a reporter and calls it; the CLI's `cli.progress` draws the events with rich, a test records
them, and a library caller may pass nothing (the `Silent...` reporters do nothing). The protocols' methods do
nothing too, so a reporter that subclasses one draws only the events it overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from opensora_cli.schemas.sample import SampleResult


class SampleReporter(Protocol):
    """Events of `opensora sample`: videos one after another, each with its denoising steps."""

    def phase(self, text: str) -> None:
        """A stage begins (e.g. "encoding prompts")."""

    def warning(self, text: str) -> None:
        """Something the user should know that does not stop the run."""

    def start(self, videos: int, steps: int) -> None:
        """Generation begins: `videos` outputs of `steps` denoising steps each."""

    def video_started(self, line: int, sample: int, prompt: str) -> None:
        """Output `sample` of input line `line` begins."""

    def step(self, index: int, steps: int) -> None:
        """Denoising step `index` (0-based) of `steps` of the current video is done."""

    def video_done(self, result: SampleResult) -> None:
        """The current video is written (or skipped: see `result.skipped`)."""

    def close(self) -> None:
        """The run ended, however it ended."""


class TrainReporter(Protocol):
    """Events of `opensora train` and `opensora train-vae`."""

    def phase(self, text: str) -> None:
        """A stage begins or a note (e.g. "loading models", "resumed from ... at step N")."""

    def warning(self, text: str) -> None:
        """Something the user should know that does not stop the run (e.g. options changed on resume)."""

    def data_report(self, summary: dict, problems: list, small_buckets: dict) -> None:
        """What the data description holds: counts, skipped records (`data.dataset.DataProblem`), and the
        buckets {(frames, height, width): samples} too small for one global batch."""

    def start(self, total_steps: int, first_step: int) -> None:
        """The loop begins at `first_step` (a resumed run) of `total_steps`."""

    def step(self, step: int, loss: float, seconds: float, samples_per_second: float, lr: float) -> None:
        """Optimisation step `step` (1-based) is done, with its loss, duration and learning rate."""

    def replaced(self, problems: list) -> None:
        """Items that failed to load (`data.dataset.DataProblem`) and were replaced by others."""

    def checkpoint(self, path: Path) -> None:
        """A checkpoint was written."""

    def close(self) -> None:
        """The run ended, however it ended."""


class SilentSampleReporter(SampleReporter):
    """Reports nothing."""


class SilentTrainReporter(TrainReporter):
    """Reports nothing."""

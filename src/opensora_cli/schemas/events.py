"""Progress events of the long commands: what a run tells its caller while it works (torch-free).

A service takes a reporter and calls it; the CLI's `cli.progress` draws the events with rich, a test records
them, and a library caller may pass nothing (the `Silent...` reporters). The protocols' methods do nothing, so a
reporter that subclasses one draws only the events it overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from opensora_cli.schemas.sample import SampleResult


class SampleReporter(Protocol):
    """Events of `opensora sample`. `phase` (a stage begins: "encoding prompts") and `warning` (something that
    does not stop the run) come at any time; `start(videos, steps)` once; then per output `video_started(line,
    sample, prompt)`, `step(index, steps)` after each denoising step (index 0-based) and `video_done(result)`
    (written, or skipped: `result.skipped`); `close()` when the run ended, however it ended."""

    def phase(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...
    def start(self, videos: int, steps: int) -> None: ...
    def video_started(self, line: int, sample: int, prompt: str) -> None: ...
    def step(self, index: int, steps: int) -> None: ...
    def video_done(self, result: SampleResult) -> None: ...
    def close(self) -> None: ...


class TrainReporter(Protocol):
    """Events of `opensora train` and `opensora train-vae`. `phase` (a stage or a note: "resumed from ... at
    step N") and `warning` at any time; `data_report(summary, problems, small_buckets)`: what the data
    description holds (counts, skipped records as `data.dataset.DataProblem`, and the buckets {(frames, height,
    width): samples} too small for one global batch); `start(total_steps, first_step)` (first_step > 0 when
    resumed); `step(...)` after optimisation step `step` (1-based); `replaced(problems)`: items that failed to
    load and were replaced by others; `checkpoint(path)` when one was written; `close()` however it ended."""

    def phase(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...
    def data_report(self, summary: dict, problems: list, small_buckets: dict) -> None: ...
    def start(self, total_steps: int, first_step: int) -> None: ...
    def step(self, step: int, loss: float, seconds: float, samples_per_second: float, lr: float) -> None: ...
    def replaced(self, problems: list) -> None: ...
    def checkpoint(self, path: Path) -> None: ...
    def close(self) -> None: ...


class SilentSampleReporter(SampleReporter):
    """Reports nothing."""


class SilentTrainReporter(TrainReporter):
    """Reports nothing."""

"""Typed errors raised by services; `cli.app.main` turns each into one line and an exit code.

No torch here: every layer imports this module.
"""

from __future__ import annotations

from pathlib import Path


class OpenSoraError(Exception):
    """Base class. `exit_code` is what the command exits with when this error reaches `main()`."""

    exit_code = 1


class InputError(OpenSoraError):
    """Bad user input (a file, a line, a field): exit code 1."""


class ValidationFailed(InputError):
    """Raised by services that refuse to start because `validate-inputs` found problems.

    Args:
        report: the `ValidationReport` that lists every problem.
    """

    def __init__(self, report) -> None:  # report: services.validation.ValidationReport
        self.report = report
        problems = report.problems
        first = problems[0].render() if problems else "inputs are not valid"
        more = f" (and {len(problems) - 1} more problem(s); run `opensora validate-inputs` to list them)" if len(
            problems
        ) > 1 else ""
        super().__init__(first + more)


class UsageError(OpenSoraError):
    """A command was called wrongly (options that do not go together): exit code 2."""

    exit_code = 2


class MissingDependencyError(OpenSoraError):
    """An optional dependency (torch_npu, deepspeed...) is needed but not installed."""


class ModelLoadError(OpenSoraError):
    """A model folder is missing, incomplete, or does not match the expected architecture."""


class Interrupted(OpenSoraError):
    """Ctrl-C during a run: the message says what was done and how to go on; exit code 130."""

    exit_code = 130


class OutputError(OpenSoraError):
    """An output could not be written (disk full, folder gone); nothing half-written is left: exit code 1."""


class GenerationError(OpenSoraError):
    """A run produced no usable output (NaN/inf latents: a dtype the model overflows in): exit code 1."""


class TrainingDiverged(OpenSoraError):
    """The training loss became NaN or infinite; the message names the step and the last good checkpoint."""


class TrainingInterrupted(Interrupted):
    """Ctrl-C during a training run. Checkpoints are atomic, so the last one is complete whatever was being
    written.

    Args:
        step: optimisation steps done when it stopped (None: before the first one, while setting up).
        last_checkpoint: the newest checkpoint of the run (saved or resumed from), or None.
        output_dir: the run's output folder (`latest` finds checkpoints there).
    """

    def __init__(self, step: int | None, last_checkpoint: Path | None, output_dir: Path) -> None:
        self.step, self.last_checkpoint = step, last_checkpoint
        where = "while setting up" if step is None else f"at step {step}"
        if last_checkpoint is None:
            how = "no checkpoint yet, so the same command starts over (--checkpointing-steps N saves more often)"
        else:
            inside = Path(last_checkpoint).resolve().parent == Path(output_dir).resolve()
            how = (f"last checkpoint: {last_checkpoint}; resume with --resume-from-checkpoint "
                   + ("latest" if inside else str(last_checkpoint)))
        super().__init__(f"interrupted {where}; {how}")

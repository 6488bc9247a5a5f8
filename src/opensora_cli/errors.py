"""Typed errors raised by services; `cli.app.main` turns each into one line and an exit code.

No torch here: every layer imports this module.
"""

from __future__ import annotations


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

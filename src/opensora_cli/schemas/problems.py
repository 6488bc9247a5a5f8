"""Problems: one finding each, rendered as `WHERE:LINE: what is wrong — how to fix it`.

Also the two helpers every check uses to phrase one: `did_you_mean` for a misspelt name, and `problems_from`,
which turns a pydantic `ValidationError` into problems (a validator's message may carry its fix after "; ").
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError


class Problem(BaseModel):
    """One thing wrong with the inputs.

    `file` says where: a path as the user wrote it, or an option name (`--num-frames`) for command-line values;
    `line` is 1-based, or None when the problem is about a whole file or option.
    """

    file: str
    line: int | None = None
    message: str

    @classmethod
    def of(cls, where: str, line: int | None, what: str, fix: str | None = None) -> Problem:
        return cls(file=where, line=line, message=f"{what} — {fix}" if fix else what)

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def render(self) -> str:
        return f"{self.location}: {self.message}"


def option_name(field: str) -> str:
    """The command-line spelling of a field: `num_frames` -> `--num-frames`."""
    return "--" + field.replace("_", "-")


def closest(word: str, choices: Iterable[str], cutoff: float = 0.5) -> str | None:
    """The choice nearest to a misspelt `word`, or None when none is near enough."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str], otherwise: str | None = None, cutoff: float = 0.5) -> str:
    """The fix for an unknown name: the nearest choice, else `otherwise` (default: the list of choices)."""
    choices = tuple(choices)
    close = closest(word, choices, cutoff)
    if close is not None:
        return f"did you mean '{close}'?"
    return otherwise if otherwise is not None else f"expected one of {', '.join(choices)}"


def error_text(error: Mapping[str, Any]) -> tuple[str, str | None]:
    """(what is wrong, the fix or None) of one pydantic error; our validators write "what; fix"."""
    what, _, fix = str(error["msg"]).removeprefix("Value error, ").partition("; ")
    return what, fix or None


def problems_from(
    exc: ValidationError,
    where: Callable[[tuple[str, ...]], tuple[str, int | None]] | None = None,
    values: Mapping[str, Any] | None = None,
) -> list[Problem]:
    """One problem per error of `exc`.

    Args:
        where: maps an error's location (field names) to (where, line); default: the field's option name.
        values: values as given; the message of a field among them starts with the value received (`'abc': ...`).
    """
    problems = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        place, line = where(loc) if where is not None else (option_name(loc[0]) if loc else "options", None)
        what, fix = error_text(error)
        if values is not None and loc and loc[0] in values:
            what = with_value(what, values[loc[0]])
        problems.append(Problem.of(place, line, what, fix))
    return problems


def with_value(what: str, value: Any) -> str:
    """`what` led by the value received (`'abc': ...`), unless the validator's message already starts with it
    (or, for a repeated option, one of its values), so that it is not named twice."""
    given = list(value) if isinstance(value, (list, tuple)) else [value]
    if any(what.startswith(repr(item)) or what.startswith(repr(str(item))) for item in given + [value]):
        return what
    return f"{value!r}: {what}"


def first_problem(exc: ValidationError, rename: Mapping[str, str] | None = None) -> str:
    """The first error of a request model as one line `--option: what; fix` (commands that stop at one)."""
    error = exc.errors()[0]
    name = option_name(str(error["loc"][0])) if error["loc"] else "options"
    name = (rename or {}).get(name, name)
    return f"{name}: {str(error['msg']).removeprefix('Value error, ')}"

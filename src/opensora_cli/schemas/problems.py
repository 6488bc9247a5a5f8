"""Problems: one finding each, rendered as `FILE:LINE: what is wrong — how to fix it`."""

from __future__ import annotations

from pydantic import BaseModel


class Problem(BaseModel):
    """One thing wrong with the inputs.

    `file` is a path as the user wrote it, or an option name (`--num-frames`) for command-line values;
    `line` is 1-based, or None when the problem is about a whole file or option.
    """

    file: str
    line: int | None = None
    message: str

    @classmethod
    def of(cls, file: str, line: int | None, what: str, fix: str | None = None) -> Problem:
        return cls(file=file, line=line, message=f"{what} — {fix}" if fix else what)

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def render(self) -> str:
        return f"{self.location}: {self.message}"

"""The request of `opensora make-demo-data`: how much synthetic data to draw, and where. No torch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, field_validator

MIN_SIZE = 32  # the shape (14-18 px) and its travel need room
# --concept: the motions of the data set (`data.synthetic.CONCEPTS`, which a test keeps equal to this; spelt
# out here so that checking a request does not import numpy)
CONCEPTS = ("none", "diagonal")


def _int_rule(ok: Callable[[int], bool], allowed: str) -> AfterValidator:
    """A check whose message says what is allowed and the value received ("must be ..., got 16")."""
    def check(value: int) -> int:
        if not ok(value):
            raise ValueError(f"{allowed}, got {value}")
        return value
    return AfterValidator(check)


Count = Annotated[int, _int_rule(lambda v: v >= 1, "must be at least 1")]
Side = Annotated[
    int, _int_rule(lambda v: v >= MIN_SIZE and v % 16 == 0, f"must be a multiple of 16 and at least {MIN_SIZE}")
]


class DemoDataRequest(BaseModel):
    """What to write. Sizes are the model's stride (16) multiples; frames 1 + 4k like every clip of the model."""

    out_dir: Path
    clips: Count = 2000
    images: Count = 200
    heldout: Count = 48
    frames: Annotated[int, _int_rule(lambda v: v >= 1 and (v - 1) % 4 == 0, "must be 1 + 4k (e.g. 17, 29)")] = 17
    height: Side = 64
    width: Side = 96
    seed: Annotated[int, _int_rule(lambda v: v >= 0, "must be 0 or more")] = 0
    concept: str = "none"  # one of CONCEPTS
    examples: Path | None = None
    overwrite: bool = False

    @field_validator("concept")
    @classmethod
    def _concept(cls, value: str) -> str:
        if value not in CONCEPTS:
            raise ValueError(f"'{value}' is not a concept; use {', '.join(CONCEPTS[:-1])} or {CONCEPTS[-1]}")
        return value

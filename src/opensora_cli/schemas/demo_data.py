"""The request of `opensora make-demo-data`: how much synthetic data to draw, and where. No torch."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, field_validator

MIN_SIZE = 32  # the shape (14-18 px) and its travel need room


class DemoDataRequest(BaseModel):
    """What to write. Sizes are the model's stride (16) multiples; frames 1 + 4k like every clip of the model."""

    out_dir: Path
    clips: int = 2000
    images: int = 200
    heldout: int = 48
    frames: int = 17
    height: int = 64
    width: int = 96
    seed: int = 0
    examples: Path | None = None
    overwrite: bool = False

    @field_validator("clips", "images", "heldout")
    @classmethod
    def _count(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be 0 or more, got {value}")
        return value

    @field_validator("frames")
    @classmethod
    def _frames(cls, value: int) -> int:
        if value < 1 or (value - 1) % 4:
            raise ValueError(f"must be 1 + 4k (e.g. 17, 29), got {value}")
        return value

    @field_validator("height", "width")
    @classmethod
    def _size(cls, value: int) -> int:
        if value < MIN_SIZE or value % 16:
            raise ValueError(f"must be a multiple of 16 and at least {MIN_SIZE}, got {value}")
        return value

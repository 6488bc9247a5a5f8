"""make-demo-data: write the synthetic training and evaluation set of the demo model (and quick-start examples).

No torch: `data.synthetic` draws with numpy and writes with Pillow and imageio-ffmpeg.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, field_validator

from opensora_cli.errors import InputError
from opensora_cli.schemas.inputs import option_name

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


def make_demo_data(options: dict[str, Any], progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Check `options` (the fields of `DemoDataRequest`), then write the data set and, with `examples`, the
    quick-start examples.

    Returns:
        `data.synthetic.make_dataset`'s summary, with "examples" (the example folder or None).

    Raises:
        InputError: a bad option value, or an output folder that is a file or is not empty (without overwrite).
    """
    try:
        request = DemoDataRequest.model_validate(options)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = option_name(str(error["loc"][0])) if error["loc"] else "options"
        if name == "--out-dir":
            name = "OUT_DIR"
        raise InputError(f"{name}: {error['msg'].removeprefix('Value error, ')}") from None
    _check_folder(request.out_dir, "OUT_DIR", request.overwrite)
    if request.examples is not None:
        _check_folder(request.examples, "--examples", request.overwrite)

    from opensora_cli.data.synthetic import make_dataset, write_examples

    summary = make_dataset(request.out_dir, clips=request.clips, images=request.images, frames=request.frames,
                           height=request.height, width=request.width, seed=request.seed, heldout=request.heldout,
                           progress=progress)
    summary["examples"] = None
    if request.examples is not None:
        write_examples(request.examples, seed=request.seed, frames=request.frames, height=request.height,
                       width=request.width)
        summary["examples"] = str(request.examples)
    return summary


def _check_folder(path: Path, name: str, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise InputError(f"{name}: {path} is a file — give a folder to write into")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise InputError(f"{name}: {path} is not empty — choose a new folder, or pass --overwrite to write over it")

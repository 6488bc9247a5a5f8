"""make-demo-data: write the synthetic training and evaluation set of the demo model (and quick-start examples).

No torch: `data.synthetic` draws with numpy and writes with Pillow and imageio-ffmpeg.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from opensora_cli.errors import InputError
from opensora_cli.schemas.demo_data import DemoDataRequest
from opensora_cli.schemas.problems import first_problem


def make_demo_data(options: dict[str, Any], progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Check `options` (the fields of `DemoDataRequest`), write the data set and, with `examples`, the quick-start
    examples; return `data.synthetic.make_dataset`'s summary with "examples" (that folder or None).

    Raises:
        InputError: a bad option value, or an output folder that is a file or is not empty (without overwrite).
    """
    try:
        request = DemoDataRequest.model_validate(options)
    except ValidationError as exc:
        raise InputError(first_problem(exc, rename={"--out-dir": "OUT_DIR"})) from None
    _check_folder(request.out_dir, "OUT_DIR", request.overwrite)
    if request.examples is not None:
        _check_folder(request.examples, "--examples", request.overwrite)

    from opensora_cli.data.synthetic import make_dataset, write_examples

    size = request.model_dump(include={"seed", "frames", "height", "width", "concept"})
    summary = make_dataset(request.out_dir, clips=request.clips, images=request.images, heldout=request.heldout,
                           progress=progress, **size)
    if request.examples is not None:
        write_examples(request.examples, **size)
    return {**summary, "examples": None if request.examples is None else str(request.examples)}


def _check_folder(path: Path, name: str, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise InputError(f"{name}: {path} is a file — give a folder to write into")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise InputError(f"{name}: {path} is not empty — choose a new folder, or pass --overwrite to write over it")

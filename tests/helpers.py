"""Constants and helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from opensora_cli.utils.video import write_video as write_frames

GOLDENS = Path(__file__).parent / "goldens"
REPO = Path(__file__).parent.parent
# x264 at CRF 10 (imageio's quality 8): test clips decode close to the frames written.
TEST_CRF = 10

# Run in a fresh interpreter with `.format(args=[...])`: prints the CLI's exit code and which heavy libraries
# the command imported.
NO_HEAVY_IMPORTS = """
import sys
from opensora_cli.cli.app import main
code = main({args!r})
heavy = sorted(m for m in ("torch", "diffusers", "transformers", "accelerate") if m in sys.modules)
print("HEAVY:", heavy, "CODE:", code)
"""


@dataclass
class Result:
    code: int
    out: str
    err: str


def write_image(path: Path, height: int, width: int, color=(200, 30, 30)) -> Path:
    """A (height, width) image of `color` with its top-left quarter in the inverse colour."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((height, width, 3), np.uint8)
    image[...] = color
    image[: height // 2, : width // 2] = (255 - np.array(color)).astype(np.uint8)  # not flat: resizes show
    Image.fromarray(image).save(path)
    return path


def write_video(path: Path, frames: int, height: int = 64, width: int = 96) -> Path:
    """An 8 fps mp4 of flat grey frames, frame i at level 7i mod 255."""
    data = np.stack([np.full((height, width, 3), (i * 7) % 255, np.uint8) for i in range(frames)])
    return write_frames(path, data, 8, crf=TEST_CRF, macro_block_size=16)


def moving_square(frames: int, height: int, width: int, color, direction: int) -> np.ndarray:
    """(frames, height, width, 3) uint8: a 16x16 square of `color` moving 2 px per frame (direction +1 / -1)."""
    out = np.full((frames, height, width, 3), 30, np.uint8)
    for i in range(frames):
        x = (width // 2 + direction * 2 * i) % (width - 16)
        out[i, height // 2 - 8 : height // 2 + 8, x : x + 16] = color
    return out


def write_short_model(root: Path, steps: int) -> Path:
    """A random tiny model whose defaults are 13 frames (4 latent frames, so 2 processes share them) at 64x96,
    CFG on, `steps` steps: the model of the multi-process tests."""
    from opensora_cli.models.registry import write_random_model_folder

    write_random_model_folder(root, seed=1)
    (root / "opensora_defaults.json").write_text(json.dumps(
        {"num_frames": 13, "height": 64, "width": 96, "crop_for_hw": True, "steps": steps, "fps": 8}))
    return root


def train_args(data_file, model_dir, output_dir, *extra) -> list:
    """`opensora train` on the tiny model and the `data_file` fixture's clips: 9 frames, batch 2, CPU-sized."""
    return ["train", "--data", data_file, "--model", "OpenSoraInpaint_v1_3-tiny", "--vae", model_dir / "vae",
            "--text-encoder", model_dir / "text_encoder", "--output-dir", output_dir, "--num-frames", "9",
            "--max-hxw", "6144", "--min-hxw", "1024", "--hw-stride", "16", "--train-fps", "8",
            "--train-batch-size", "2", "--dataloader-num-workers", "0", "--seed", "3", "--json", *extra]


def opensora_executable() -> str:
    """The installed `opensora` console script (next to this Python first)."""
    found = shutil.which("opensora", path=os.path.dirname(sys.executable)) or shutil.which("opensora")
    if found is None:
        pytest.fail("the `opensora` console script is not installed in this environment (pip install -e .)")
    return found

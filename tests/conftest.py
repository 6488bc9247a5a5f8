"""Shared fixtures: media files made in the test, and running the real CLI in-process or as the installed command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

GOLDENS = Path(__file__).parent / "goldens"
REPO = Path(__file__).parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class Result:
    code: int
    out: str
    err: str


def write_image(path: Path, height: int, width: int, color=(200, 30, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((height, width, 3), np.uint8)
    image[...] = color
    image[: height // 2, : width // 2] = (255 - np.array(color)).astype(np.uint8)  # not flat: resizes show
    Image.fromarray(image).save(path)
    return path


def write_video(path: Path, frames: int, height: int = 64, width: int = 96) -> Path:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    data = [np.full((height, width, 3), (i * 7) % 255, np.uint8) for i in range(frames)]
    imageio.mimwrite(path, data, fps=8, codec="libx264", quality=8, macro_block_size=16)
    return path


@pytest.fixture
def media(tmp_path: Path):
    """Factory for files in tmp_path: media.image('a.png', h, w), media.video('v.mp4', frames), media.text(...)."""

    class Media:
        root = tmp_path

        def image(self, name: str, height: int = 64, width: int = 96, color=(200, 30, 30)) -> Path:
            return write_image(tmp_path / name, height, width, color)

        def video(self, name: str, frames: int, height: int = 64, width: int = 96) -> Path:
            return write_video(tmp_path / name, frames, height, width)

        def text(self, name: str, *lines: str) -> Path:
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            return path

    return Media()


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """Run `opensora ARGS` in-process (cwd = tmp_path unless given); returns Result(code, out, err)."""
    from opensora_cli.cli.app import main

    def run(*args: str, cwd: Path | None = None) -> Result:
        monkeypatch.chdir(cwd or tmp_path)
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def opensora_executable() -> str:
    found = shutil.which("opensora", path=os.path.dirname(sys.executable)) or shutil.which("opensora")
    if found is None:
        pytest.fail("the `opensora` console script is not installed in this environment (pip install -e .)")
    return found


@pytest.fixture
def installed_cli(tmp_path):
    """Run the installed `opensora` console script as a subprocess."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 120, env: dict | None = None) -> Result:
        proc = subprocess.run(
            [opensora_executable(), *map(str, args)], cwd=cwd or tmp_path, capture_output=True, text=True,
            timeout=timeout, env={**os.environ, **(env or {})},
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run

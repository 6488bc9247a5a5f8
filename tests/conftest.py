"""Shared fixtures: media files made in the test, running the real CLI in-process or as the installed command, and
a tiny model folder with a small training set for the `opensora train` tests."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .helpers import (
    TEST_CRF,
    Result,
    moving_square,
    opensora_executable,
    write_frames,
    write_image,
    write_video,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def text_cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """Every test has a fresh, empty text cache of its own (never ~/.cache): `sample` runs with the cache on,
    as it does for users, and no test hits an entry another one stored. Subprocesses inherit the variable."""
    folder = tmp_path_factory.mktemp("text-cache")
    monkeypatch.setenv("OPENSORA_TEXT_CACHE", str(folder))
    return folder


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


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random tiny model folder (transformer, vae, text_encoder) for training; sampling tests use their own."""
    from opensora_cli.models.registry import write_random_model_folder

    root = tmp_path_factory.mktemp("model")
    write_random_model_folder(root, seed=2)
    return root


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """A data description file: 8 clips (21 frames, 64x96) of squares moving left or right, and 2 stills."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    (root / "videos").mkdir()
    records = []
    colors = [(220, 40, 40), (40, 220, 40), (40, 40, 220), (220, 220, 40)]
    for i in range(8):
        name = f"videos/clip{i}.mp4"
        write_frames(root / name, moving_square(21, 64, 96, colors[i % 4], 1 if i % 2 else -1), 8, crf=TEST_CRF,
                     macro_block_size=16)
        direction = "right" if i % 2 else "left"
        records.append({"path": name, "cap": f"a coloured square moves {direction}", "num_frames": 21, "fps": 8,
                        "resolution": {"height": 64, "width": 96}})
    for i in range(2):
        name = f"videos/still{i}.png"
        Image.fromarray(moving_square(1, 64, 96, colors[i], 1)[0]).save(root / name)
        records.append({"path": name, "cap": ["a square", "a coloured square"],
                        "resolution": {"height": 64, "width": 96}})
    (root / "anno.json").write_text(json.dumps(records))
    data = root / "data.txt"
    data.write_text(f"{root},{root / 'anno.json'}\n")
    return data

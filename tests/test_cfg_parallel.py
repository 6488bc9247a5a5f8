"""`--cfg-parallel`: the guidance halves on two processes (and with --sp, 2 x 2), equal to one process within
float tolerance (a batch of one sums in another order than the batch of two)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _frames(path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy().astype(int)


def _assert_same_videos(one: Path, other: Path) -> None:
    """Equal within float tolerance, judged after the mp4: a last-bit difference of the batch-of-one sum flips a
    few uint8 values, and h264 carries those flips into its macroblock choices (measured: 47.7 dB on one CPU, a mean
    under 0.1 of 255 on another); a video of another seed measures 12.7 dB."""
    names = sorted(p.name for p in one.glob("*.mp4"))
    assert names and names == sorted(p.name for p in other.glob("*.mp4"))
    for name in names:
        a, b = _frames(one / name), _frames(other / name)
        mse = float(((a - b) ** 2).mean())
        psnr = 10 * np.log10(255.0**2 / mse) if mse else float("inf")
        assert psnr >= 40 and np.abs(a - b).mean() < 0.5, (name, psnr, np.abs(a - b).mean())


@pytest.mark.parametrize(("extra", "message"), [
    (["--nproc", "2", "--cfg-parallel", "--guidance-scale", "1"], "guidance is off"),
    (["--nproc", "3", "--cfg-parallel", "--guidance-scale", "2"], "it runs on 2 processes, not 3"),
    (["--nproc", "2", "--cfg-parallel", "--sp", "--guidance-scale", "2"], "4 or more, not 2"),
])
def test_cfg_parallel_refusals_are_one_line_before_anything_starts(cli, tmp_path, extra, message):
    result = cli("sample", "--prompts", DEMO / "prompts.txt", "--conds", DEMO / "conds.txt", "-o", tmp_path / "o",
                 *extra)
    text = result.out + result.err
    assert result.code == 1 and "--cfg-parallel" in text and message in text and "Traceback" not in text, text


@pytest.mark.slow
def test_two_processes_share_the_guidance_halves_of_every_video(installed_cli, tmp_path):
    # (the demo model samples at CFG 1 by default: guidance is asked for)
    args = ["sample", "--prompts", DEMO / "prompts.txt", "--conds", DEMO / "conds.txt", "--steps", "3", "--json",
            "--guidance-scale", "2"]
    single = installed_cli(*args, "-o", "single", cwd=tmp_path, timeout=300, env=ONE_THREAD)
    multi = installed_cli(*args, "-o", "cfg", "--nproc", "2", "--cfg-parallel", cwd=tmp_path, timeout=300,
                          env=ONE_THREAD)
    assert single.code == 0 and multi.code == 0, multi.err
    assert json.loads(multi.out)["mode"] == "cfg-parallel"
    _assert_same_videos(tmp_path / "single", tmp_path / "cfg")


@pytest.mark.slow
def test_four_processes_are_two_halves_of_two_sequence_shards(installed_cli, tmp_path):
    """--nproc 4 --sp --cfg-parallel: each half's 4 latent frames split over 2 processes."""
    from .helpers import write_image, write_short_model

    model = write_short_model(tmp_path / "model", steps=3)
    write_image(tmp_path / "start.png", 64, 96, color=(200, 30, 30))
    (tmp_path / "p.txt").write_text("a red square\n")
    (tmp_path / "c.txt").write_text("start.png\n")
    args = ["sample", "-p", "p.txt", "-c", "c.txt", "--model", model, "--json"]
    single = installed_cli(*args, "-o", "single", cwd=tmp_path, timeout=300, env=ONE_THREAD)
    grid = installed_cli(*args, "-o", "grid", "--nproc", "4", "--sp", "--cfg-parallel", cwd=tmp_path, timeout=400,
                         env=ONE_THREAD)
    assert single.code == 0 and grid.code == 0, grid.err
    assert json.loads(grid.out)["mode"] == "cfg-parallel+sp"
    _assert_same_videos(tmp_path / "single", tmp_path / "grid")

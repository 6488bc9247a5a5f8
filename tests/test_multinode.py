"""Sampling on several machines: two torchrun agents ("nodes") on this machine meet through a c10d rendezvous on
127.0.0.1, split the lines between them, write to one shared folder and make the same videos as one process; a
rerun finishes only what is missing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sample_args(out: Path) -> list[str]:
    return ["sample", "--prompts", str(DEMO / "prompts.txt"), "--conds", str(DEMO / "conds.txt"), "--steps", "2",
            "--output-dir", str(out)]


def _two_nodes(out: Path, tmp_path: Path) -> list[str]:
    """Start two torchrun agents of one process each, as two machines would; their logs."""
    port, env = _free_port(), {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "test",
               "-m", "opensora_cli", *_sample_args(out)]
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              cwd=tmp_path) for _ in range(2)]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(logs)
    return logs


@pytest.mark.slow
def test_two_nodes_make_the_videos_of_one_process_and_a_rerun_finishes_what_is_missing(installed_cli, tmp_path):
    single = installed_cli(*_sample_args(tmp_path / "single"), cwd=tmp_path, timeout=300,
                           env={"OMP_NUM_THREADS": "1"})
    assert single.code == 0, single.err
    shared = tmp_path / "shared"
    logs = _two_nodes(shared, tmp_path)
    videos = sorted(p.name for p in (tmp_path / "single").glob("*.mp4"))
    assert len(videos) == 4 and sorted(p.name for p in shared.glob("*.mp4")) == videos
    for name in videos:
        assert (shared / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
    assert "ddp on 2 process(es)" in "".join(logs)

    (shared / videos[2]).unlink()  # (its sidecar alone does not count as finished)
    logs = _two_nodes(shared, tmp_path)
    assert "1 generated, 3 skipped" in "".join(logs), logs
    assert (shared / videos[2]).read_bytes() == (tmp_path / "single" / videos[2]).read_bytes()

"""The launcher (distributed/launch.py): the CLI in several processes, exit codes, and no process left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from opensora_cli import __version__
from opensora_cli.distributed.launch import is_distributed_child, launch

REPO = Path(__file__).parent.parent
# What `opensora sample --nproc 2` (or `train --accelerate-config FILE`) does, with 2 tests/launch_worker.py
# processes for the children: python -c PARENT ACCELERATE_CONFIG_OR_EMPTY OUT_DIR
PARENT = ("import sys; from opensora_cli.distributed.launch import launch; "
          "sys.exit(launch(2, sys.argv[2:], module='tests.launch_worker', accelerate_config=sys.argv[1] or None))")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def test_is_distributed_child(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert is_distributed_child()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not is_distributed_child()


@pytest.mark.slow
def test_launch_runs_the_cli_in_each_process(capfd):
    assert launch(2, ["--version"]) == 0
    # both children write to one stdout, the text and its newline in separate writes, so their lines may
    # interleave ("opensora-cli Xopensora-cli X\n\n", seen once in CI): count the texts, not the lines
    assert capfd.readouterr().out.count(f"opensora-cli {__version__}") == 2
    # the argv reaches the children untouched (torchrun's parser would read --nproc as --nproc-per-node), and
    # their usage-error code comes back, not the launcher's 1. The first child to fail makes the agent stop
    # the other, which may be gone before it prints: at least one message, never a count that races.
    assert launch(2, ["--nproc", "3", "--", "x"]) == 2
    assert capfd.readouterr().err.count("No such option: --nproc") in (1, 2)


@pytest.fixture
def accelerate_config(tmp_path) -> Path:
    """One machine, 2 processes (accelerate's multi-GPU launcher runs on a CPU too)."""
    import socket

    with socket.socket() as sock:  # a free port for the config (accelerate falls back to another if taken)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "accelerate.yaml"
    path.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 1\n"
                    f"num_processes: 2\nmachine_rank: 0\nmixed_precision: 'no'\nmain_process_port: {port}\n")
    return path


@pytest.mark.slow
def test_an_accelerate_config_runs_the_cli_through_accelerate(capfd, accelerate_config):
    assert launch(1, ["--version"], accelerate_config=accelerate_config) == 0
    assert capfd.readouterr().out.count(f"opensora-cli {__version__}") == 2


def running(pid: int) -> bool:
    """A zombie (killed, not yet reaped by whoever adopted it) does not run."""
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    return False


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what} after {seconds} s")
        time.sleep(0.05)


@pytest.fixture(params=["elastic", "accelerate"])
def two_workers(request, tmp_path):
    """A parent process running 2 workers through the launcher (torch's elastic agent in the parent, or
    accelerate's launcher in a child): (parent, pids of every process it started); all killed at the end."""
    config = str(request.getfixturevalue("accelerate_config")) if request.param == "accelerate" else ""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, config, str(tmp_path)], cwd=REPO,
                              start_new_session=True)
    files = [tmp_path / f"rank{rank}.pid" for rank in range(2)]
    started: list[int] = []
    try:
        wait_for(lambda: all(f.exists() for f in files) or parent.poll() is not None, 120, "2 workers to start")
        assert parent.poll() is None, f"the parent exited with {parent.returncode}"
        started = [child.pid for child in psutil.Process(parent.pid).children(recursive=True)]
        assert {int(f.read_text()) for f in files} <= set(started)
        yield parent, started
    finally:
        for pid in (parent.pid, *started):  # whatever a failed test left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.wait()


@linux_only
@pytest.mark.slow
def test_killing_the_parent_kills_every_process_it_started(two_workers):
    parent, started = two_workers
    parent.kill()  # SIGKILL: the parent cannot clean up, the kernel has to
    parent.wait()
    wait_for(lambda: not any(map(running, started)), 30, "every process it started to die with it")


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_exits_130(two_workers):
    parent, started = two_workers
    parent.send_signal(signal.SIGINT)
    assert parent.wait(timeout=60) == 130
    wait_for(lambda: not any(map(running, started)), 30, "every process it started to stop")

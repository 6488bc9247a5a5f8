"""The one launcher: run the CLI itself in several processes (`sample --nproc`, `train --nproc`, `train
--accelerate-config`), through torch's elastic agent in this process (what `torchrun --standalone` runs), or
accelerate's launcher in a child process for an accelerate config file. Each worker sees RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT (`is_distributed_child`) and does the work instead of launching again.

Every process the launcher starts runs through this module first (`python -m opensora_cli.distributed.launch
MODULE ARGS`): on Linux it asks the kernel to kill it when its parent dies (PR_SET_PDEATHSIG), so when
`opensora` is killed, even by SIGKILL, no worker is left running.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import subprocess
import sys
import uuid
from pathlib import Path

CHILD_MODULE = "opensora_cli"
_HERE = "opensora_cli.distributed.launch"
_PARENT_PID = "OPENSORA_LAUNCH_PARENT_PID"  # who starts a process through this module, for its start-up check
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def is_distributed_child() -> bool:
    """True in a process started by a launcher (this one, torchrun, accelerate) among several."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch(nproc: int, argv: list[str], module: str = CHILD_MODULE, accelerate_config: Path | None = None) -> int:
    """Run `python -m MODULE ARGV` in `nproc` processes on this machine (or as an accelerate config says) and
    wait for them; their output streams to this process's, unprefixed. Without OMP_NUM_THREADS set, each child
    gets cpu_count // nproc intra-op threads (torchrun would give them 1; a CPU run wants one per core).

    Args:
        nproc: processes on this machine, >= 1.
        argv: the child's command-line arguments (e.g. sys.argv[1:]).
        module: the module the children run; the CLI, or a test worker.
        accelerate_config: an accelerate config file; accelerate's launcher then decides machines, processes,
            DeepSpeed and the rendezvous port from it.

    Returns:
        0 when every child succeeded, else the worst child exit code (128 + N for a signal N; 130 when this
        process was interrupted). Under an accelerate config, accelerate's own exit code (1 for any failure).
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    env = {_PARENT_PID: str(os.getpid())}
    if "OMP_NUM_THREADS" not in os.environ:  # read by torch in each child at start-up
        env["OMP_NUM_THREADS"] = str(max(1, _cpu_count() // nproc))
    try:
        with _environ(env):  # the children inherit this process's environment
            if accelerate_config is None:
                return _elastic(nproc, _through_here(module, *argv))
            return _supervise([sys.executable, *_through_here(
                "accelerate.commands.launch", "--config_file", str(accelerate_config), "-m", _HERE, module, *argv)])
    except KeyboardInterrupt:
        return 130


def _through_here(module: str, *args: str) -> list[str]:
    """Python's arguments for `python -m MODULE ARGS` started through this module (unbuffered, as torchrun does)."""
    return ["-u", "-m", _HERE, module, *args]


def _elastic(nproc: int, python_args: list[str]) -> int:
    """torch's elastic agent in this process: `python PYTHON_ARGS` in `nproc` processes."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun --standalone: a c10d rendezvous on localhost:0, a free port the agent binds and holds (so two
    # launches on one machine never collide, and no other process can take it between pick and use); no
    # restarts (a failed sample is not retried); the agent looks at its children every 0.1 s. The argv goes
    # to the children as they are: torchrun's parser would read --nproc as its own --nproc-per-node.
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)(*python_args)
    except ChildFailedError as exc:
        # When one child fails the agent sends SIGTERM to the others: their 143 is a consequence, not a cause.
        codes = [_exit_code(failure.exitcode) for failure in exc.failures.values()]
        causes = [code for code in codes if code != 128 + signal.SIGTERM]
        return max(causes or codes)
    except SignalException as exc:  # the agent forwarded SIGINT/SIGTERM to the children and stopped them
        return 128 + int(exc.sigval)
    return 0


def _supervise(command: list[str]) -> int:
    """Run a launcher process in a process group of its own and wait for it; returns its exit code.

    Ctrl-C reaches only this process (the child is not in the terminal's group): it is passed on as SIGINT,
    and the child's agent stops its workers. Whatever is left in the group at the end is killed.
    """
    proc = subprocess.Popen(command, start_new_session=True)
    interrupted = False
    try:
        while True:
            try:  # wait without reaping: while the child is a zombie its group id cannot be reused
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
                break
            except KeyboardInterrupt:
                if interrupted:  # a second Ctrl-C: stop waiting (the group is killed below)
                    raise
                interrupted = True
                os.killpg(proc.pid, signal.SIGINT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
    return 130 if interrupted else _exit_code(code)


def _exit_code(exitcode: int) -> int:
    """A child's exit status as a shell reports it: a signal N becomes 128 + N."""
    return 128 - exitcode if exitcode < 0 else exitcode


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use, not the machine's
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """These environment variables while the block runs (children inherit them), then what was there before."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this process when its parent dies (and exit if it already has)."""
    expected = os.environ.get(_PARENT_PID)
    os.environ[_PARENT_PID] = str(os.getpid())  # what the processes this one starts (an agent's workers) check
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if expected and os.getppid() != int(expected):  # adopted: the parent died before prctl, no signal will come
        os._exit(128 + signal.SIGKILL)


if __name__ == "__main__":  # a process the launcher started: python -m opensora_cli.distributed.launch MODULE ARGS
    _die_with_parent()
    target, sys.argv[1:] = sys.argv[1], sys.argv[2:]
    runpy.run_module(target, run_name="__main__", alter_sys=True)

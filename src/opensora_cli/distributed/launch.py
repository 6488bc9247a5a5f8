"""Run the CLI itself in several processes, through torch's elastic launcher (what `torchrun` runs).

`opensora sample --nproc 4 ...` calls `launch(4, argv)` in the parent; each child is `python -m opensora_cli
ARGV` with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set, so it knows it is a child
(`is_distributed_child`) and does the work instead of launching again. The rendezvous is standalone on a
free port, so two launches on one machine do not collide.
"""

from __future__ import annotations

import os
import signal
import uuid

CHILD_MODULE = "opensora_cli"


def is_distributed_child() -> bool:
    """True in a process started by a launcher (this one, torchrun, accelerate) among several."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use, not the machine's
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _exit_code(exitcode: int) -> int:
    """A child's exit status as a shell reports it: a signal N becomes 128 + N."""
    return 128 - exitcode if exitcode < 0 else exitcode


def launch(nproc: int, argv: list[str], module: str = CHILD_MODULE) -> int:
    """Run `python -m MODULE ARGV` in `nproc` processes on this machine and wait for them.

    Output of the children streams to this process's stdout and stderr, unprefixed. Without OMP_NUM_THREADS
    set, each child gets cpu_count // nproc intra-op threads (torchrun would give them 1; one each per core
    is what a CPU run wants, and GPU runs do not care).

    Args:
        nproc: processes, >= 1.
        argv: the child's command-line arguments (e.g. sys.argv[1:]).
        module: the module the children run; the CLI, or a test worker.

    Returns:
        0 when every child succeeded, else the worst child exit code (128 + N for a signal N; 130 when this
        process was interrupted).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    threads_set = "OMP_NUM_THREADS" in os.environ
    if not threads_set:  # read by torch in each child at start-up
        os.environ["OMP_NUM_THREADS"] = str(max(1, _cpu_count() // nproc))

    # torchrun's own parser and config: --standalone's rendezvous (c10d on localhost:0 = a free port), no
    # restarts (a failed sample is not retried), -m MODULE. The child's argv bypasses that parser, which would
    # take an argument such as --nproc for an abbreviation of its own --nproc-per-node.
    args = get_args_parser().parse_args(
        [
            "--nnodes=1",
            f"--nproc-per-node={nproc}",
            "--rdzv-backend=c10d",
            "--rdzv-endpoint=localhost:0",
            f"--rdzv-id={uuid.uuid4()}",
            "--max-restarts=0",
            "--module",
            module,
        ]
    )
    try:
        config, entrypoint, entry_args = config_from_args(args)
        elastic_launch(config, entrypoint)(*entry_args, *argv)
    except ChildFailedError as exc:
        # When one child fails the agent sends SIGTERM to the others: their 143 is a consequence, not a cause.
        codes = [_exit_code(failure.exitcode) for failure in exc.failures.values()]
        causes = [code for code in codes if code != 128 + signal.SIGTERM]
        return max(causes or codes)
    except SignalException as exc:  # the agent forwarded SIGINT/SIGTERM to the children and stopped them
        return 128 + int(exc.sigval)
    except KeyboardInterrupt:
        return 130
    finally:
        if not threads_set:
            del os.environ["OMP_NUM_THREADS"]
    return 0

"""What the benchmarks share: run the installed command in a child process and watch its memory."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def run_sample(args: list[str]) -> tuple[float, float, str]:
    """Run `opensora sample ARGS` in a child process; (wall seconds, peak RSS in GiB, its stdout); see
    `run_opensora`."""
    return run_opensora(["sample", *args])


def run_opensora(args: list[str]) -> tuple[float, float, str]:
    """Run `opensora ARGS` in a child process; (wall seconds, peak RSS in GiB, its stdout).

    The peak is that of the child and all its descendants together (the workers of `--nproc 2`), polled every
    50 ms.

    Raises:
        SystemExit: the command failed (with the end of its stderr).
    """
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "opensora_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak, watched = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
        except psutil.Error:
            break
        total = 0
        for member in tree:
            try:
                total += member.memory_info().rss
            except psutil.Error:  # a worker that just ended
                pass
        peak = max(peak, total)
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"opensora {args[0]} failed ({proc.returncode}): {err.strip()[-500:]}")
    return time.perf_counter() - started, peak / 2**30, out


def make_heldout(folder: Path, lines: int, seed: int) -> Path:
    """`opensora make-demo-data FOLDER` with `lines` held-out clips (one training clip and image); the eval folder."""
    subprocess.run([sys.executable, "-m", "opensora_cli", "make-demo-data", str(folder), "--clips", "1", "--images",
                    "1", "--heldout", str(lines), "--seed", str(seed), "--overwrite"], check=True, capture_output=True)
    return folder / "eval"

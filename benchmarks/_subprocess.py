"""What the benchmarks share: run the installed command in a child process and watch its memory."""

from __future__ import annotations

import subprocess
import sys
import time


def run_sample(args: list[str]) -> tuple[float, float, str]:
    """Run `opensora sample ARGS` in a child process; (wall seconds, its peak RSS in GiB, its stdout).

    Raises:
        SystemExit: the command failed (with the end of its stderr).
    """
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "opensora_cli", "sample", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak, watched = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"opensora sample failed ({proc.returncode}): {err.strip()[-500:]}")
    return time.perf_counter() - started, peak / 2**30, out

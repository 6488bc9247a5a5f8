"""Multi-process teardown, stressed: how often does a 2-process run fail? Prints a table; every count must be 0.

    python benchmarks/stress_distributed.py              # 30 runs of each mode (about 12 minutes on 2 cores)
    python benchmarks/stress_distributed.py --runs 5

Modes, each started as a fresh 2-process gloo run on this machine:
- worker: tests/dist_worker.py (what tests/test_distributed.py runs): three sequence-parallel forward and
  backward passes, then `distributed_context` teardown;
- sample ddp: the installed `opensora sample --nproc 2` on the bundled demo model, 2 prompts split between
  the processes (2 steps, 5 frames, `--overwrite`, so every run generates);
- sample sp: the same with `--sp` (both processes share each video).

A run fails when its exit code is not 0 or its output lacks what it should have written; the first failure of
each mode is shown with the last lines of its output. Before the teardown fix (shutdown with no barrier,
groups freed only at interpreter exit) the worker aborted with exit 134 in about 1 run in 15 here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _opensora() -> str:
    exe = shutil.which("opensora", path=os.path.dirname(sys.executable)) or shutil.which("opensora")
    if exe is None:
        raise SystemExit("opensora is not installed in this environment: pip install -e . first")
    return exe


def worker_run(root: Path) -> tuple[bool, str]:
    out = root / "worker"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    code = (
        "import sys; from opensora_cli.distributed.launch import launch; "
        f"sys.exit(launch(2, [{str(out)!r}], module='tests.dist_worker'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    reports = [out / f"rank{rank}.json" for rank in range(2)]
    ok = proc.returncode == 0 and all(
        p.is_file() and json.loads(p.read_text())["group_freed"] and not json.loads(p.read_text())["shutdown_warnings"]
        for p in reports
    )
    return ok, f"exit {proc.returncode}\n{proc.stderr[-1500:]}"


def sample_run(root: Path, sp: bool) -> tuple[bool, str]:
    out = root / ("sp" if sp else "ddp")
    demo = REPO / "examples" / "demo"
    (root / "p.txt").write_text("a yellow triangle moves to the right\na blue square moves to the left\n")
    (root / "c.txt").write_text(f"{demo / 'i2v.png'}\n{demo / 'i2v.png'}\n")
    command = [_opensora(), "sample", "-p", str(root / "p.txt"), "-c", str(root / "c.txt"), "--steps", "2",
               "--num-frames", "5", "--nproc", "2", "--overwrite", "--json", "--output-dir", str(out)]
    if sp:
        command.append("--sp")
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True)
    ok = (proc.returncode == 0 and len(list(out.glob("*.mp4"))) == 2 and not list(out.glob(".*part*"))
          and "still referenced" not in proc.stderr)
    return ok, f"exit {proc.returncode}\n{proc.stderr[-1500:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each mode")
    args = parser.parse_args()
    modes = {
        "worker (tests/dist_worker.py)": worker_run,
        "opensora sample --nproc 2": lambda root: sample_run(root, sp=False),
        "opensora sample --nproc 2 --sp": lambda root: sample_run(root, sp=True),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in modes.items():
            failures, first, started = 0, None, time.perf_counter()
            for index in range(args.runs):
                ok, detail = run(Path(tmp))
                if not ok:
                    failures += 1
                    first = first or f"run {index + 1}: {detail}"
                print(f"{name}: run {index + 1}/{args.runs} {'ok' if ok else 'FAILED'}", file=sys.stderr, flush=True)
            rows.append((name, args.runs, failures, (time.perf_counter() - started) / args.runs, first))
    print("\n| mode | runs | failures | s per run |\n| --- | ---: | ---: | ---: |")
    for name, runs, failures, seconds, _ in rows:
        print(f"| {name} | {runs} | {failures} | {seconds:.1f} |")
    for name, _, _, _, first in rows:
        if first:
            print(f"\nfirst failure of {name}, {first}")
    sys.exit(1 if any(failures for _, _, failures, _, _ in rows) else 0)


if __name__ == "__main__":
    main()

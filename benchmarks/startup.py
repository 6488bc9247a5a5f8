"""Start-up time of the `opensora` command: median wall time of `opensora --help` over 10 runs.

    python benchmarks/startup.py [--runs 10]

Goal: under 0.3 s on a 2-core CPU machine (no torch, diffusers or transformers at start-up).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    exe = shutil.which("opensora", path=os.path.dirname(sys.executable)) or shutil.which("opensora")
    if exe is None:
        sys.exit("the opensora command is not installed (pip install -e .)")
    commands = {
        "opensora --help": [exe, "--help"],
        "opensora mask-preview -m i2v --json": [exe, "mask-preview", "-m", "i2v", "--json"],
        "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
    }
    print("| command | median s | min s | max s | runs |\n|---|---|---|---|---|")
    for name, command in commands.items():
        subprocess.run(command, capture_output=True, check=True)  # warm the file cache
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} | {args.runs} |")


if __name__ == "__main__":
    main()

"""The memory estimate of `opensora sample` against the measured peak, printed as a table (CPU, demo model).

    python benchmarks/memory.py

Each case runs the installed CLI's code in a fresh process (`opensora_cli.cli.app.main`, 1 step, i2v, the
bundled demo model, fp32) and reads that process's peak RSS; the estimate is what the same command computes
before it loads anything (services/memory.py). The RSS includes what the estimate leaves out on purpose
(the Python interpreter, torch's libraries and thread pools, about 0.4 GiB here), so the table shows
both the raw peak and the peak above a 1-frame run's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASE = """
import json, resource, sys
from opensora_cli.cli.app import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""
CASES = [(1, 64, 96, True), (17, 64, 96, True), (129, 64, 96, True), (129, 64, 96, False), (33, 256, 384, True),
         (33, 256, 384, False), (257, 128, 192, True)]


def main() -> None:
    from opensora_cli.services import memory
    from opensora_cli.services.model_folders import bundled_model_dir

    demo = bundled_model_dir()
    dirs = {kind: demo / kind for kind in ("transformer", "vae", "text_encoder")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "p.txt").write_text("a yellow triangle moves to the right\n")
        (root / "c.txt").write_text(f"{REPO / 'examples' / 'demo' / 'i2v.png'}\n")
        for frames, height, width, tiling in CASES:
            args = ["sample", "-p", "p.txt", "-c", "c.txt", "--steps", "1", "--num-frames", str(frames), "--height",
                    str(height), "--width", str(width), "--overwrite", "--json", "-o", f"out{len(rows)}",
                    "--vae-tiling", "on" if tiling else "off"]
            proc = subprocess.run([sys.executable, "-c", CASE, *args], cwd=root, capture_output=True, text=True)
            measured = json.loads(proc.stdout.strip().splitlines()[-1])
            estimate = memory.estimate(dirs, frames, height, width, "fp32", "cpu", True, tiling)
            rows.append((frames, height, width, tiling, estimate.peak, measured["rss"], measured["code"]))
    floor = rows[0][5]
    print("| frames | size | tiling | estimate | peak RSS | peak RSS above a 1-frame run | estimate / that |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for frames, height, width, tiling, estimate, rss, code in rows:
        above = rss - floor
        ratio = f"{estimate / above:.2f}" if above > 0 else "-"
        print(f"| {frames} | {height}x{width} | {'on' if tiling else 'off'} | {memory.gib(estimate)} | "
              f"{memory.gib(rss)} | {memory.gib(above)} | {ratio} |" + ("" if code == 0 else f" exit {code}"))


if __name__ == "__main__":
    main()

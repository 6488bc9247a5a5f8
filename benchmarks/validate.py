"""Speed of `opensora validate-inputs`.

    python benchmarks/validate.py [--lines 10000] [--large-lines 200]

Case "small": 10,000 lines, each with its own 64x96 PNG (two for every fifth line), so 12,000 files are
decoded. Case "large": 200 lines of 720x1280 JPEGs, where threaded decoding pays off. For each case the
end-to-end command time, and the service with serial decoding vs the default (threads for large files).
Goal: the small case under 10 s on a 2-core CPU machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_inputs(root: Path, lines: int, size: tuple[int, int], suffix: str) -> tuple[Path, Path, int]:
    media = root / "media"
    media.mkdir()
    rng = np.random.default_rng(0)
    prompts, conds, files = [], [], 0
    for i in range(lines):
        names = [f"media/{i}_a{suffix}"] + ([f"media/{i}_b{suffix}"] if i % 5 == 0 else [])
        for name in names:
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / name)
            files += 1
        prompts.append(f"prompt number {i}: a small coloured square moves")
        conds.append(",".join(names))
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")
    (root / "conds.txt").write_text("\n".join(conds) + "\n")
    return root / "prompts.txt", root / "conds.txt", files


def run_case(name: str, lines: int, size: tuple[int, int], suffix: str) -> list[tuple]:
    from opensora_cli.services.validation import LineChecker, build_request, read_lines

    exe = shutil.which("opensora", path=os.path.dirname(sys.executable)) or shutil.which("opensora")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prompts, conds, files = make_inputs(root, lines, size, suffix)
        label = f"{name}: {lines} lines, {files} files {size[0]}x{size[1]}{suffix}"
        start = time.perf_counter()
        proc = subprocess.run([exe, "validate-inputs", "-p", prompts, "-c", conds, "--json", "--max-hxw", "102400"],
                              capture_output=True, cwd=root)
        rows.append((label, "opensora validate-inputs --json", time.perf_counter() - start, lines, proc.returncode))

        request, _ = build_request(dict(prompts=prompts, conds=conds))
        prompt_lines, _ = read_lines(prompts, "--prompts")
        cond_lines, _ = read_lines(conds, "--conds")
        triples = [(n, p, c) for n, (p, c) in enumerate(zip(prompt_lines, cond_lines), start=1)]
        for workers, how in ((1, "service, serial decoding"), (None, "service, default (threads for large files)")):
            start = time.perf_counter()
            LineChecker(request, str(conds), root, workers=workers).check(triples)
            rows.append((label, how, time.perf_counter() - start, lines, 0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--large-lines", type=int, default=200)
    args = parser.parse_args()
    rows = run_case("small", args.lines, (64, 96), ".png") + run_case("large", args.large_lines, (720, 1280), ".jpg")
    print(f"{os.cpu_count()} CPUs\n\n| case | what | seconds | lines/s | exit |\n|---|---|---|---|---|")
    for case, how, seconds, lines, code in rows:
        print(f"| {case} | {how} | {seconds:.2f} | {lines / seconds:,.0f} | {code} |")


if __name__ == "__main__":
    main()

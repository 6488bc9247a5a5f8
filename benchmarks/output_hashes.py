"""The bytes of the videos `opensora sample` writes, for every mask type, on the demo model and a random tiny model.

A refactor that must not change behaviour runs this before (`--save before.json`) and after (`--check
before.json`): the same seed must give the same bytes of video. It drives the installed `opensora` command, as a
user would, and prints one table row per video: the case, the line's mask type and the sha256 of the mp4.

    python benchmarks/output_hashes.py --save /tmp/before.json
    python benchmarks/output_hashes.py --check /tmp/before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"

# (prompt, conditions line) for every default mask type of a line's inputs, on the demo's media.
LINES = [
    ("a yellow triangle moves to the right", "i2v.png"),
    ("a red square moves up on a dark green background", "transition_first.png,transition_last.png"),
    ("a blue square moves to the left", "keyframe_0.png@0,keyframe_1.png@8,keyframe_2.png@-1"),
    ("a white circle moves down", "continuation.mp4"),
    ("a green circle moves up", ""),
]
VIDEO_LINE = [("a white circle moves down", "continuation.mp4")]

# name -> (lines, model ("demo" or "random"), extra options)
TINY: list[str] = []
# The random model's folder carries its own defaults, so that arbitrary-resolution sizing runs at a tiny area.
RANDOM_DEFAULTS = {"num_frames": 13, "height": 32, "width": 48, "max_hxw": 3072, "max_hxw_range": [1024, 6144],
                   "steps": 3, "fps": 8}
CASES: dict[str, tuple[list[tuple[str, str]], str, list[str]]] = {
    "demo": (LINES, "demo", []),
    "demo-clear": (VIDEO_LINE, "demo", ["--mask-type", "clear"]),
    "demo-random_temporal": (VIDEO_LINE, "demo", ["--mask-type", "random_temporal"]),
    "demo-2-samples-noise": (LINES[:1], "demo", ["--num-samples-per-prompt", "2", "--noise-strength", "0.3"]),
    "random": (LINES, "random", TINY),
    "random-clear": (VIDEO_LINE, "random", [*TINY, "--mask-type", "clear"]),
    "random-random_temporal": (VIDEO_LINE, "random", [*TINY, "--mask-type", "random_temporal"]),
    "random-fixed-no-cfg": (
        LINES, "random", [*TINY, "--crop-for-hw", "--height", "32", "--width", "48", "--guidance-scale", "1"],
    ),
    "random-ddim-rescale": (
        LINES[:2], "random", [*TINY, "--sampler", "DDIM", "--guidance-rescale", "0.7", "--negative-prompt", "blur"],
    ),
}


def run_case(name: str, work: Path, random_model: Path) -> dict[str, str]:
    lines, model, extra = CASES[name]
    case = work / name
    case.mkdir()
    for media in DEMO.iterdir():
        if media.suffix in (".png", ".mp4"):
            shutil.copy(media, case / media.name)
    (case / "prompts.txt").write_text("".join(p + "\n" for p, _ in lines))
    (case / "conds.txt").write_text("".join(c + "\n" for _, c in lines))
    model_args = ["--model", str(random_model)] if model == "random" else []
    command = ["opensora", "sample", "--prompts", "prompts.txt", "--conds", "conds.txt", "--output-dir", "out",
               *model_args, *extra]
    done = subprocess.run(command, cwd=case, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{name}: {' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    hashes = {}
    for sidecar in sorted((case / "out").glob("*.json")):
        meta = json.loads(sidecar.read_text())
        video = sidecar.with_suffix(".mp4")
        hashes[f"{name}/{video.name} ({meta.get('mask_type')})"] = hashlib.sha256(video.read_bytes()).hexdigest()
    return hashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the hashes to this JSON file")
    parser.add_argument("--check", type=Path, help="compare against a file written by --save; exit 1 on a change")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--random-model", type=Path,
                        help="use this random model folder (keep the one of --save when a preset's sizes change)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        random_model = args.random_model or work / "random-model"
        if args.random_model is None or not random_model.exists():
            subprocess.run(["opensora", "init-model", str(random_model), "--seed", "3"], check=True,
                           capture_output=True)
            (random_model / "opensora_defaults.json").write_text(json.dumps(RANDOM_DEFAULTS))
        hashes: dict[str, str] = {}
        for name in args.cases:
            hashes.update(run_case(name, work, random_model))
    before = json.loads(args.check.read_text()) if args.check else {}
    width = max(map(len, hashes))
    print(f"{'video':<{width}}  sha256 (first 16)  {'vs before' if args.check else ''}")
    changed = 0
    for key, digest in hashes.items():
        verdict = ""
        if args.check:
            verdict = "same" if before.get(key) == digest else "CHANGED" if key in before else "new"
            changed += verdict != "same"
        print(f"{key:<{width}}  {digest[:16]}   {verdict}")
    if args.check:
        missing = sorted(set(before) - set(hashes))
        for key in missing:
            print(f"{key:<{width}}  (missing)          CHANGED")
        print(f"{len(hashes) - changed} of {len(before)} videos have the same bytes as before")
        if changed or missing:
            sys.exit(1)
    if args.save:
        args.save.write_text(json.dumps(hashes, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Does a LoRA learn a new concept? The demo model with and without an adapter, on two held-out sets.

    bash examples/lora/train_diagonal_lora.sh work            # data and the adapter (see there)
    python benchmarks/lora_concept.py --adapter work/lora/checkpoint-1500 --new work/diag/eval --old work/axis/eval

Each set's first frames and prompts are sampled as i2v with the model's defaults (17 frames at 64x96, 25 steps,
its CFG), the same seed for every row, through the service `opensora sample` uses:

- new concept: `make-demo-data --concept diagonal`'s held-out set ("moves up and to the left"): a video follows
  when its tracked motion is within 22.5 degrees of the diagonal (`services.evaluation`; chance 12.5 %);
- old set: the four axis directions the demo model was trained on, scored as `benchmarks/demo_quality.py` does
  (chance 25 %): the adapter must not make the model forget them.

Printed per row (the base model, then the adapter at each `--scales`): direction followed on each set (trackable
videos; the untrackable ones counted), the kept first frame's PSNR, and seconds per video.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def sample_set(eval_dir: Path, out: Path, lora: list[str], seed: int) -> float:
    """i2v on every line of `eval_dir` (with the adapters of `lora`); seconds per video."""
    from opensora_cli.services import sampling

    plan = sampling.plan(dict(prompts=eval_dir / "prompts.txt", conds=eval_dir / "conds.txt", output_dir=out,
                              seed=seed, lora=lora, overwrite=True, no_text_cache=True))
    summary = sampling.run(plan)
    return float(np.mean([r.seconds for r in summary.results if not r.skipped]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", type=Path, required=True, help="the LoRA folder (a checkpoint-N)")
    parser.add_argument("--new", type=Path, required=True, help="eval/ of make-demo-data --concept diagonal")
    parser.add_argument("--old", type=Path, required=True, help="eval/ of make-demo-data (axis directions)")
    parser.add_argument("--scales", default="1", help="adapter scales to try, comma-separated")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--work", type=Path, help="folder for the videos [a temporary one]")
    args = parser.parse_args(argv)
    from opensora_cli.services.evaluation import evaluate, load_eval_set

    work = args.work or Path(tempfile.mkdtemp(prefix="lora-concept-"))
    rows = [("base model", [])] + [(f"LoRA at scale {s}", [f"{args.adapter}:{s}"]) for s in args.scales.split(",")]
    print("| model | new concept followed | old set followed | kept-frame PSNR (new / old) | s / video |")
    print("| --- | --- | --- | --- | --- |")
    for label, lora in rows:
        cells, psnrs, seconds = [], [], []
        for name, eval_dir in (("new", args.new), ("old", args.old)):
            out = work / f"{label.replace(' ', '-')}-{name}"
            seconds.append(sample_set(eval_dir, out, lora, args.seed))
            report = evaluate(load_eval_set(eval_dir), eval_dir, out, "i2v")
            cells.append(f"{100 * report.direction_accuracy:.1f} % ({report.untrackable} untrackable)")
            psnrs.append(f"{report.kept_psnr_mean:.2f}")
        print(f"| {label} | {cells[0]} | {cells[1]} | {' / '.join(psnrs)} dB | {np.mean(seconds):.2f} |", flush=True)
    print(f"\n(work folder: {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Step caching on the demo model: how much transformer work each `--step-cache` policy saves, and what it costs.

    python benchmarks/step_cache.py                     # 32 held-out images, 25 steps (the demo's default)
    python benchmarks/step_cache.py --lines 8 --policies off,first-block:0.3,taylorseer:3

Held-out first frames and prompts come from `opensora make-demo-data` (i2v, the demo model's defaults: 17
frames and its CFG; above 1, each step is one batched call of both halves). Every policy runs the same lines
with the same seed, in this process, through the service `opensora sample` uses. Printed per policy:

- block evaluations: the feed-forward calls of all blocks over those of the uncached run (First Block Cache
  runs the first block on every step and skips the rest on reused steps; TaylorSeer predicts the attention
  and feed-forward outputs between full steps); "fewer" is its inverse;
- seconds per video (wall, model loading left out) on this machine;
- direction: the share of trackable videos whose shape moves the way the prompt says (`services.evaluation`),
  and the kept first frame's PSNR against the condition image;
- PSNR of each video against the uncached one of the same line and seed (100 dB = the same).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from _subprocess import make_heldout  # benchmarks/_subprocess.py (this script's folder is on the path)

DEFAULT_POLICIES = ("off,first-block:0.1,first-block:0.2,first-block:0.3,first-block:0.4,first-block:0.5,"
                    "taylorseer:2,taylorseer:3,taylorseer:4")


def run_policy(eval_dir: Path, out: Path, policy: str, steps: int, seed: int) -> tuple[int, float]:
    """Sample the eval set with `policy`; (feed-forward calls, seconds per video)."""
    from diffusers.models.attention import FeedForward

    from opensora_cli.services import sampling

    calls = [0]
    forward = FeedForward.forward

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return forward(self, *args, **kwargs)

    FeedForward.forward = counted  # the class, so that any hook diffusers adds still sits in front of it
    try:
        plan = sampling.plan(dict(prompts=eval_dir / "prompts.txt", conds=eval_dir / "conds.txt", output_dir=out,
                                  steps=steps, seed=seed, step_cache=policy, overwrite=True))
        summary = sampling.run(plan)
    finally:
        FeedForward.forward = forward
    seconds = [r.seconds for r in summary.results if not r.skipped]
    return calls[0], float(np.mean(seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=32, help="held-out images")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--policies", default=DEFAULT_POLICIES, help="comma-separated; the first is the baseline")
    parser.add_argument("--work", type=Path, help="folder for the data and videos [a temporary one]")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)

    from opensora_cli.services.evaluation import evaluate, load_eval_set, load_outputs, psnr, read_frames

    work = args.work or Path(tempfile.mkdtemp(prefix="step-cache-"))
    data = work / "data"
    if not (data / "eval" / "metadata.json").is_file():
        make_heldout(data, args.lines, args.seed)
    eval_dir = data / "eval"
    entries = load_eval_set(eval_dir)

    policies = args.policies.split(",")
    print("| `--step-cache` | block evaluations | fewer | s / video | direction followed | kept-frame PSNR "
          "| PSNR vs uncached |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    baseline_calls, baseline_frames = None, None
    for policy in policies:
        out = work / f"out-{policy.replace(':', '-')}"
        calls, seconds = run_policy(eval_dir, out, policy, args.steps, args.seed)
        report = evaluate(entries, eval_dir, out, "i2v")
        frames = {sidecar["line"]: read_frames(video, 17) for sidecar, video in load_outputs(out)}
        if baseline_calls is None:
            baseline_calls, baseline_frames = calls, frames
        against = np.mean([psnr(frames[line], baseline_frames[line]) for line in frames])
        share = calls / baseline_calls
        print(f"| {policy} | {100 * share:.0f} % | {1 / share:.2f}x | {seconds:.2f} | "
              f"{100 * report.direction_accuracy:.1f} % ({report.untrackable} untrackable) | "
              f"{report.kept_psnr_mean:.2f} dB | {against:.1f} dB |", flush=True)
    print(f"\n(work folder: {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

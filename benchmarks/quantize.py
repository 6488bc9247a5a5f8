"""`--quantize` on a CPU: what int8 weights cost in fidelity and save in memory, against unquantised weights.

    python benchmarks/quantize.py                  # the demo model (25 steps) and a random tiny model (4 steps)
    python benchmarks/quantize.py --steps 10 --rows none,int8

For each model and each `--quantize` row, printed as a markdown table:

- embedding cosine: the text encoder's states (quantised as `sample` quantises it) against the unquantised
  encoder's, cosine over the real tokens of each prompt of examples/demo/prompts.txt (the texts `sample`
  encodes, CFG's negative row included), the mean over the prompts;
- PSNR: each video against the unquantised row's video of the same line and seed, the mean over the lines
  (100 dB = the same video);
- seconds per video and the peak RSS of the `opensora sample` process (psutil, polled every 50 ms; the text
  encoder is loaded in each run: `--no-text-cache`).

The demo model makes examples/demo's prompts and conditions at its defaults; the random tiny model
(`write_random_model_folder(seed=0)`, untrained) the same prompts as text-to-video at 9x64x96.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import _subprocess  # benchmarks/_subprocess.py (this script's folder is on the path)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"


def run_sample(args: list[str]) -> tuple[float, float, list[dict]]:
    """`opensora sample ARGS --json`: (wall seconds, peak RSS in GiB, the results)."""
    wall, peak, out = _subprocess.run_sample([*args, "--json", "--no-text-cache"])
    return wall, peak, json.loads(out)["results"]


def embedding_cosine(text_encoder: Path, prompts: list[str], quantize: str, negative: str | None,
                     template: bool) -> float:
    """Mean over prompts of the cosine of the `quantize`d encoder's states against the unquantised ones."""
    import torch

    from opensora_cli.models.text_encoder import prompt_texts
    from opensora_cli.services.text_cache import load_text_encoder

    if quantize == "none":
        return 1.0
    plain = load_text_encoder(text_encoder, torch.float32, "cpu")
    quantised = load_text_encoder(text_encoder, torch.float32, "cpu", quantize)
    cosines = []
    with torch.no_grad():
        for prompt in prompts:
            texts = prompt_texts(prompt, negative, True, template)
            (a, mask), (b, _) = plain(texts), quantised(texts)
            keep = mask.bool().squeeze(1)  # (R, L): the real tokens
            a, b = a.squeeze(1)[keep], b.squeeze(1)[keep]
            cosines.append(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item())
    return float(np.mean(cosines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="none,int8", help="--quantize values, the first the reference")
    parser.add_argument("--steps", type=int, help="denoising steps of the demo model [its default, 25]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="folder for the random model and the videos [a temporary one]")
    args = parser.parse_args(argv)
    from opensora_cli.models.registry import write_random_model_folder
    from opensora_cli.services.evaluation import psnr, read_frames
    from opensora_cli.services.model_folders import bundled_model_dir

    work = args.work or Path(tempfile.mkdtemp(prefix="quantize-"))
    random_model = work / "random-model"
    if not (random_model / "transformer").is_dir():
        write_random_model_folder(random_model, seed=0)
    prompts = [line.strip() for line in (DEMO / "prompts.txt").read_text().splitlines() if line.strip()]
    demo_steps = ["--steps", str(args.steps)] if args.steps else []
    models = {
        "demo": (bundled_model_dir(), ["--conds", str(DEMO / "conds.txt"), *demo_steps], "", False),
        "random tiny": (random_model, ["--crop-for-hw", "--height", "64", "--width", "96", "--num-frames", "9",
                                       "--steps", "4"], None, True),
    }
    rows = args.rows.split(",")
    print("| model | --quantize | embedding cosine | video PSNR vs none | s / video | peak RSS |")
    print("|---|---|---|---|---|---|")
    for name, (folder, options, negative, template) in models.items():
        reference = None
        for row in rows:
            out = work / name.replace(" ", "-") / row
            _wall, peak, results = run_sample(["--prompts", str(DEMO / "prompts.txt"), "--model", str(folder),
                                                 "--seed", str(args.seed), "-o", str(out), "--overwrite",
                                                 "--quantize", row, *options])
            frames = {r["line"]: read_frames(Path(r["video"]), json.loads(Path(r["sidecar"]).read_text())["num_frames"])
                      for r in results}
            reference = reference or frames
            video_psnr = np.mean([psnr(frames[line], reference[line]) for line in frames])
            text = folder / "text_encoder"
            cosine = embedding_cosine(text, prompts, row, negative, template)
            made = sum(r["seconds"] for r in results) / len(results)
            print(f"| {name} | {row} | {cosine:.6f} | {video_psnr:.1f} dB | {made:.2f} | {peak:.2f} GiB |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training speed and memory: step time, samples/s and peak memory, tiny and medium models, 1 vs 2 processes,
full fine-tuning against LoRA (rank 16 on attention, and on attention and feed-forward), and the tiny model
with and without the latent cache (`--vae-posterior-mean --latent-cache-mib`; here the 17-frame windows start
at random in 33-frame clips, so few inputs repeat: the cache's worst case).

    python benchmarks/train.py [--steps 20] [--only lora]

Runs `opensora train` in a child process on synthetic clips written into a temporary folder (a coloured square
moving across a plain background, 33 frames at 128x192; batches of 2 clips of 17 frames), with random-weight
VAE and text encoder. Peak memory is that of the command and its workers together (benchmarks/_subprocess.py,
CPU RSS: the model, optimiser and activations, and torch itself, about 0.4 GiB).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from _subprocess import run_opensora  # benchmarks/_subprocess.py (this script's folder is on the path)


def make_data(root: Path, clips: int = 8) -> Path:
    import imageio.v2 as imageio

    (root / "videos").mkdir(parents=True)
    records = []
    for i in range(clips):
        frames = []
        for t in range(33):
            frame = np.full((128, 192, 3), 40, np.uint8)
            x = (20 + 3 * t * (1 if i % 2 else -1)) % 160
            frame[48:80, x : x + 32] = (200, 60 + 20 * i, 60)
            frames.append(frame)
        name = f"videos/{i}.mp4"
        imageio.mimwrite(root / name, frames, fps=16, codec="libx264", quality=8, macro_block_size=16)
        records.append({"path": name, "cap": f"a square moves {'right' if i % 2 else 'left'}", "num_frames": 33,
                        "fps": 16, "resolution": {"height": 128, "width": 192}})
    (root / "anno.json").write_text(json.dumps(records))
    (root / "data.txt").write_text(f"{root},{root / 'anno.json'}\n")
    return root / "data.txt"


def wide_text_encoder(path: Path) -> Path:
    """A random 2-layer T5 encoder 512 wide: the medium transformer reads 512-wide text states."""
    import transformers

    from opensora_cli.models.registry import build

    build("t5-tiny", d_model=512, d_kv=64, num_heads=8, d_ff=1024).save_pretrained(path)
    transformers.ByT5Tokenizer().save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", help="only the runs whose options contain this (e.g. lora)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from opensora_cli.models.registry import write_random_model_folder

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_data(root / "data")
        models = write_random_model_folder(root / "model")
        text_encoders = {"tiny": models["text_encoder"], "medium": wide_text_encoder(root / "t5-512")}
        lora = ("--lora-rank", "16")
        runs = [(size, nproc, ()) for size in ("tiny", "medium") for nproc in (1, 2)]
        runs += [(size, 1, extra) for size in ("tiny", "medium")
                 for extra in (lora, (*lora, "--lora-targets", "attn+ff"))]
        runs += [("tiny", 1, ("--vae-posterior-mean",)),
                 ("tiny", 1, ("--vae-posterior-mean", "--latent-cache-mib", "256"))]
        for size, nproc, extra in runs:
            if args.only and args.only not in " ".join(extra):
                continue
            out = root / f"out-{size}-{nproc}-{'-'.join(extra)}"
            command = ["train", "--data", data, "--model", f"OpenSoraInpaint_v1_3-{size}", "--vae",
                       models["vae"], "--text-encoder", text_encoders[size], "--output-dir", out,
                       "--num-frames", "17", "--max-hxw", "24576", "--min-hxw", "4096", "--hw-stride", "16",
                       "--train-fps", "16", "--train-batch-size", "2", "--max-train-steps", str(args.steps),
                       "--checkpointing-steps", str(args.steps), "--learning-rate", "1e-4",
                       "--dataloader-num-workers", "0", "--nproc", str(nproc), "--json", *extra]
            try:
                _, peak, stdout = run_opensora(command)
            except SystemExit as failed:
                rows.append((size, nproc, extra, float("nan"), float("nan"), "—", str(failed)[-300:]))
                continue
            result = json.loads(stdout.strip().splitlines()[-1])
            cache = result.get("latent_cache")
            reused = f"; {cache['hits']} of {cache['hits'] + cache['misses']} encodes reused" if cache else ""
            trained = f"{result['trainable_parameters']:,} of {result['parameters']:,}"
            rows.append((size, nproc, extra, result["seconds_per_step"], result["samples_per_second"], trained,
                         f"{peak:.2f} GiB peak RSS; last loss {result['losses'][-1]:.3f}{reused}"))
    print(f"CPU, {os.cpu_count()} cores, fp32; batch 2 per process of 17x128x192 clips, {args.steps} steps\n")
    print("| model | processes | options | s/step | samples/s | trained parameters | memory / notes |\n"
          "|---|---|---|---|---|---|---|")
    for size, nproc, extra, per_step, rate, trained, notes in rows:
        print(f"| {size} | {nproc} | {' '.join(extra) or '—'} | {per_step:.3f} | {rate:.2f} | {trained} | {notes} |")


if __name__ == "__main__":
    main()

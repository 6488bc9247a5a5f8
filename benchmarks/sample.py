"""Sampling speed and memory, printed as a table.

    python benchmarks/sample.py                         # CPU: tiny and medium models, 1 vs 2 processes
    python benchmarks/sample.py --device cuda --full    # GPU: the full-size model at 93x352x640, 100 steps

CPU cases run `opensora sample` in a child process on random-weight model folders (written once into a temporary
folder), with no text cache, and read the per-video times from the JSON summary; "peak RSS" is that of the
command and its workers together (benchmarks/_subprocess.py). Each case runs once: one case per row, 1 vs 2
processes, the step caches and int8 weights (`pip install 'opensora-cli[quant]'`).
The GPU case runs the pipeline in-process with random full-size weights (transformer 2.78 B and WF-VAE, bf16)
and random 512-token text states (the text encoder runs once per prompt, outside the loop): an i2v video of
93 frames at 352x640, EulerAncestral, 100 steps, CFG 7.5. The reference needs 150 s for this on one H100.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing
from _subprocess import run_sample  # benchmarks/_subprocess.py (this script's folder is on the path)

CPU_CASES = (
    ("1 process, 2 videos", ["--nproc", "1"]),
    ("2 processes (DDP), 2 videos", ["--nproc", "2"]),
    ("2 processes (--sp), 2 videos", ["--nproc", "2", "--sp"]),
    ("2 processes (--cfg-parallel), 2 videos", ["--nproc", "2", "--cfg-parallel"]),
    ("--step-cache taylorseer:2", ["--nproc", "1", "--step-cache", "taylorseer:2"]),
    ("--step-cache first-block:0.4", ["--nproc", "1", "--step-cache", "first-block:0.4"]),
    ("--quantize int8", ["--nproc", "1", "--quantize", "int8"]),
)


def cpu_cases(root: Path, cases: list[str] | None) -> list[tuple]:
    """Each case of CPU_CASES (or those whose label contains one of `cases`) on the tiny and the medium model."""
    from PIL import Image

    from opensora_cli.models.registry import write_random_model_folder

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 192, 3), dtype=np.uint8)).save(root / "a.png")
    (root / "p.txt").write_text("a red square moves left\na blue circle moves right\n")
    (root / "c.txt").write_text("a.png\na.png\n")
    rows = []
    for size in ("tiny", "medium"):
        model = root / size
        write_random_model_folder(model, transformer=f"OpenSoraInpaint_v1_3-{size}")
        common = ["-p", str(root / "p.txt"), "-c", str(root / "c.txt"), "--model", str(model), "--json",
                  "--steps", "10", "--num-frames", "13", "--crop-for-hw", "--height", "128", "--width", "192",
                  "--no-text-cache"]
        for label, extra in CPU_CASES:
            if cases and not any(case in label for case in cases):
                continue
            try:
                wall, peak, out = run_sample([*common, *extra, "--output-dir", str(root / f"out-{len(rows)}")])
            except SystemExit as failed:
                rows.append((size, label, float("nan"), float("nan"), float("nan"), str(failed)[-200:]))
                continue
            results = json.loads(out.strip().splitlines()[-1])["results"]
            per_step = np.mean([r["seconds_per_step"] for r in results])
            per_video = np.mean([r["seconds"] for r in results])
            rows.append((size, label, per_step, per_video, wall, f"{peak:.2f} GiB peak RSS"))
    return rows


def gpu_full(device: str, compile_blocks: bool, steps: int) -> list[tuple]:
    import torch

    from opensora_cli.models.registry import build
    from opensora_cli.pipelines.pipeline_inpaint import OpenSoraInpaintPipeline
    from opensora_cli.pipelines.schedulers import make_scheduler

    torch.backends.cuda.matmul.allow_tf32 = True
    dtype = torch.bfloat16
    transformer = build("OpenSoraInpaint_v1_3-2B/122", device="meta").to_empty(device=device)
    with torch.no_grad():
        for param in transformer.parameters():
            param.normal_(0, 0.02)
    transformer = transformer.to(dtype).eval().requires_grad_(False)
    if compile_blocks:
        transformer.compile_repeated_blocks()
    vae = build("WFVAEModel_D8_4x8x8", device=device).to(dtype).eval().requires_grad_(False)
    vae.enable_tiling()
    pipe = OpenSoraInpaintPipeline(None, vae, transformer, make_scheduler("EulerAncestralDiscrete"))
    generator = torch.Generator(device).manual_seed(0)
    text = torch.randn(2, 1, 512, 4096, generator=generator, device=device, dtype=dtype)
    mask = torch.zeros(2, 1, 512, dtype=torch.long, device=device)
    mask[:, :, :120] = 1
    image = np.random.default_rng(0).integers(0, 255, (352, 640, 3), dtype=np.uint8)
    rows = []
    for run in ("warm-up (5 steps)", f"{steps} steps"):
        n = 5 if run.startswith("warm") else steps
        stamps = []
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = pipe("", conditions=[image], num_frames=93, num_inference_steps=n, guidance_scale=7.5,
                   generator=generator, prompt_embeds=(text, mask), output_type="latent",
                   callback_on_step_end=lambda pipe, i, t, tensors: stamps.append(time.perf_counter()))
        torch.cuda.synchronize()
        loop = time.perf_counter() - start
        decode_start = time.perf_counter()
        with torch.inference_mode():
            video = vae.decode_latents(out.videos.to(dtype))
        torch.cuda.synchronize()
        decode = time.perf_counter() - decode_start
        peak = torch.cuda.max_memory_allocated() / 2**30
        per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
        label = f"full 2.78 B{' compiled' if compile_blocks else ''}, {run}"
        rows.append(("full", label, per_step, loop + decode, loop + decode,
                     f"{peak:.2f} GiB peak; loop {loop:.1f} s, decode {decode:.2f} s, video {tuple(video.shape)}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="the full-size GPU case")
    parser.add_argument("--compile", action="store_true", help="also time the full case with compiled blocks")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--cases", help="CPU: only the cases whose label contains one of these, comma-separated")
    args = parser.parse_args()
    if args.full:
        rows = gpu_full(args.device, False, args.steps)
        if args.compile:
            rows += gpu_full(args.device, True, args.steps)
        import torch

        title = f"{torch.cuda.get_device_name()}, bf16, torch {torch.__version__}"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = cpu_cases(Path(tmp), args.cases.split(",") if args.cases else None)
        title = f"CPU, {os.cpu_count()} cores, fp32; 13 frames at 128x192, 10 steps, CFG 7.5"
    print(f"{title}\n\n| model | case | s/step | s/video | wall s | memory / notes |\n|---|---|---|---|---|---|")
    for size, label, per_step, per_video, wall, notes in rows:
        print(f"| {size} | {label} | {per_step:.3f} | {per_video:.1f} | {wall:.1f} | {notes} |")


if __name__ == "__main__":
    main()

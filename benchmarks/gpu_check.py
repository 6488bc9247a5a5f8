"""The GPU check of issue 14: one table of speed, memory and fidelity for every speed/memory option.

    python benchmarks/gpu_check.py                       # one CUDA GPU: the full-size model, 93x352x640, 100 steps
    python benchmarks/gpu_check.py --steps 30            # quicker (per-step times hold; PSNRs are of 30 steps)
    python benchmarks/gpu_check.py --device cpu --tiny   # a smoke run of this script on a CPU (tiny models)

Random full-size weights (transformer 2.78 B, WF-VAE) in bf16, random 512-token text states, an i2v video of
93 frames at 352x640, EulerAncestral, CFG 7.5, the same seed for every case. For each case: seconds per step
(from the step callbacks, after a warm-up), the whole denoising loop, the peak GPU memory, and the PSNR of the
decoded video against the baseline's. Then whether the baseline job and each memory option fit when the
process may use only 24 GB or 12 GB (`torch.cuda.set_per_process_memory_fraction`). CFG-parallel needs 2
GPUs and its own processes: run `opensora sample --nproc 2 --cfg-parallel` for it.

This was written without a GPU at hand (its `--tiny` CPU smoke run is what was checked); the README's GPU
table is to be filled from its first run on one.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

SPEED_CASES = ["baseline", "compile", "first-block:0.05", "first-block:0.1", "first-block:0.2", "taylorseer:2",
               "taylorseer:3", "int8", "fp8"]
MEMORY_CASES = ["baseline", "int8", "fp8", "cpu-offload", "cpu-offload+int8"]


def build_pipe(device: str, dtype, tiny: bool, case: str):
    """A pipeline with random weights, set up for one case (a fresh transformer: hooks do not carry over)."""
    import torch

    from opensora_cli.models.quantize import quantize_linears
    from opensora_cli.models.registry import build
    from opensora_cli.models.step_cache import enable_step_cache
    from opensora_cli.pipelines.pipeline_inpaint import OpenSoraInpaintPipeline
    from opensora_cli.pipelines.schedulers import make_scheduler
    from opensora_cli.schemas.step_cache import StepCache

    name = "OpenSoraInpaint_v1_3-tiny" if tiny else "OpenSoraInpaint_v1_3-2B/122"
    transformer = build(name, device="meta").to_empty(device=device)
    torch.manual_seed(0)  # the same random weights in every case
    with torch.no_grad():
        for param in transformer.parameters():
            param.normal_(0, 0.02)
    transformer = transformer.to(dtype).eval().requires_grad_(False)
    vae = build("WFVAEModel_D8_4x8x8-tiny" if tiny else "WFVAEModel_D8_4x8x8", device=device).to(dtype).eval()
    vae.requires_grad_(False).enable_tiling()
    for part in case.split("+"):
        if part in ("int8", "fp8"):
            quantize_linears(transformer, part)
        elif part == "compile":
            transformer.compile_repeated_blocks()
        elif part.startswith(("first-block", "taylorseer")):
            enable_step_cache(transformer, StepCache.parse(part))
    pipe = OpenSoraInpaintPipeline(None, vae, transformer, make_scheduler("EulerAncestralDiscrete"))
    pipe.set_progress_bar_config(disable=True)
    if "cpu-offload" in case:
        pipe.enable_model_cpu_offload(device=device)
    return pipe


def run_case(pipe, device: str, dtype, tiny: bool, steps: int):
    """(seconds per step, loop seconds, peak GiB, decoded video (T, H, W, 3) uint8) of one i2v video."""
    import torch

    frames, height, width = (9, 64, 96) if tiny else (93, 352, 640)
    width_text = pipe.transformer.config.caption_channels
    generator = torch.Generator(device).manual_seed(0)
    text = torch.randn(2, 1, 512, width_text, generator=generator, device=device, dtype=dtype)
    mask = torch.zeros(2, 1, 512, dtype=torch.long, device=device)
    mask[:, :, :120] = 1
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    cuda = torch.device(device).type == "cuda"
    stamps = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    out = pipe("", conditions=[image], num_frames=frames, height=height, width=width, crop_for_hw=True,
               num_inference_steps=steps, guidance_scale=7.5, generator=torch.Generator(device).manual_seed(1),
               prompt_embeds=(text, mask), callback_on_step_end=lambda p, i, t, x: stamps.append(time.perf_counter()))
    if cuda:
        torch.cuda.synchronize()
    loop = time.perf_counter() - started
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return per_step, loop, peak, out.videos[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def fits(device: str, dtype, tiny: bool, case: str, limit_gib: float, steps: int) -> str:
    """Whether `case` runs within `limit_gib` of GPU memory: "yes (peak X GiB)" or "no (out of memory)"."""
    import torch

    total = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit_gib / total), torch.device(device))
    pipe = None
    try:
        pipe = build_pipe(device, dtype, tiny, case)
        _, _, peak, _ = run_case(pipe, device, dtype, tiny, steps)
        return f"yes ({peak:.1f} GiB)"
    except torch.OutOfMemoryError:
        return "no (out of memory)"
    finally:
        pipe = None
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(1.0, torch.device(device))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--tiny", action="store_true", help="tiny random models (a smoke run of this script)")
    args = parser.parse_args(argv)

    import torch
    from diffusers.utils import logging as diffusers_logging

    from opensora_cli.models.quantize import quantization_problem

    diffusers_logging.set_verbosity_error()  # (casting random weights with .to() warns, harmlessly, per model)
    device = torch.device(args.device)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    print(f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, {dtype}, torch "
          f"{torch.__version__}, {args.steps} steps\n")
    print("| case | s / step | denoising loop s | peak GiB | PSNR vs baseline |\n| --- | --- | --- | --- | --- |")
    baseline = None
    for case in SPEED_CASES:
        if case in ("int8", "fp8") and quantization_problem(case, device):
            print(f"| {case} | - | - | - | ({quantization_problem(case, device)[0]}) |")
            continue
        if case == "compile" and device.type == "cpu":
            continue
        pipe = build_pipe(args.device, dtype, args.tiny, case)
        run_case(pipe, args.device, dtype, args.tiny, 3)  # warm-up (and compilation)
        per_step, loop, peak, video = run_case(pipe, args.device, dtype, args.tiny, args.steps)
        baseline = video if baseline is None else baseline
        print(f"| {case} | {per_step:.3f} | {loop:.1f} | {peak:.2f} | {psnr(video, baseline):.1f} dB |", flush=True)
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if device.type == "cuda":
        print("\n| case | fits in 24 GB | fits in 12 GB |\n| --- | --- | --- |")
        for case in MEMORY_CASES:
            if any(q in case for q in ("int8", "fp8")) and quantization_problem(case.split("+")[-1], device):
                continue
            print(f"| {case} | {fits(args.device, dtype, args.tiny, case, 24, 3)} | "
                  f"{fits(args.device, dtype, args.tiny, case, 12, 3)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
